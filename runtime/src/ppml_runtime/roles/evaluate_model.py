"""The ``evaluate-model`` role: measure a delivered model on a built-in data set's test split.

What an analyst runs in their own namespace, on public data. The split is the trainer's own
(:func:`ppml_runtime.training.data.split_records`), so with the same ``--test-fraction`` and
``--split-seed`` as the job it is the records the job held out. Prints one JSON line
``{"accuracy": ..., "records": ...}``; exit code 1 with a one-line error on failure.
"""

from __future__ import annotations

import argparse
import json
import logging
from decimal import Decimal, InvalidOperation
from typing import get_args

from ppml_runtime.contract import BuiltinName

HELP = "measure a delivered model's accuracy on a built-in data set's test split"

logger = logging.getLogger(__name__)


def _fraction(text: str) -> str:
    try:
        value = Decimal(text)
    except InvalidOperation as err:
        raise argparse.ArgumentTypeError(f"{text} is not a decimal number") from err
    if not Decimal(0) <= value < Decimal(1):
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1)")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate-model`` role's options."""
    parser.add_argument("--model", required=True, help="the delivered model directory")
    parser.add_argument("--builtin", required=True, choices=get_args(BuiltinName))
    parser.add_argument(
        "--test-fraction", type=_fraction, default="0.2", help="in [0, 1); default 0.2"
    )
    parser.add_argument("--split-seed", type=int, default=0, help="default 0, as the contract")


def evaluate_model(
    model_dir: str, builtin: str, test_fraction: str, split_seed: int
) -> dict[str, float | int]:
    """Return ``{"accuracy", "records"}`` of a delivered model on a built-in test split.

    Raises
    ------
    ModelArtifactError
        When the model cannot be loaded or does not take the data set's records.
    ValueError
        When the split holds no test record.

    """
    import torch

    from ppml_runtime.release.artifact import ModelArtifactError, load_model, read_file_config
    from ppml_runtime.training.data import load_builtin, split_records
    from ppml_runtime.training.dp_sgd import evaluate

    file_config = read_file_config(model_dir)
    split = split_records(load_builtin(builtin), test_fraction, split_seed)
    if file_config.num_features != split.num_features:
        raise ModelArtifactError(
            f"the model takes {file_config.num_features} features; {builtin} records have "
            f"{split.num_features}"
        )
    records = int(split.y_test.shape[0])
    if records == 0:
        raise ValueError(f"--test-fraction {test_fraction} leaves no test record")
    model = load_model(model_dir)
    accuracy, _ = evaluate(
        model, torch.from_numpy(split.x_test), torch.from_numpy(split.y_test), "cpu"
    )
    return {"accuracy": accuracy, "records": records}


def run(args: argparse.Namespace) -> int:
    """Evaluate the model, print one JSON line and return the exit code."""
    from ppml_runtime.release.artifact import ModelArtifactError
    from ppml_runtime.training.errors import TrainerError

    try:
        result = evaluate_model(args.model, args.builtin, args.test_fraction, args.split_seed)
    except (ModelArtifactError, TrainerError, ValueError, OSError) as err:
        logger.error("Failed to evaluate the model %s: %s", args.model, err)
        return 1
    print(json.dumps(result), flush=True)
    return 0
