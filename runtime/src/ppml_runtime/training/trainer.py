"""The trainer role: config in, DP-SGD training, report out.

Exit codes: 0 done; ``EXIT_INVALID_CONFIG`` (2) for a config this runtime cannot honour (it
never trains); ``EXIT_DATA_MISMATCH`` (3) when the training split differs from the declared
``numRecords``; 1 for any other failure. Every exit writes a :class:`TrainingReport` to the
termination message path (``$PPML_TERMINATION_MESSAGE_PATH`` or ``/dev/termination-log``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ppml_runtime.contract import (
    ENV_RANK,
    ENV_TERMINATION_MESSAGE_PATH,
    ENV_WORLD_SIZE,
    TERMINATION_MESSAGE_PATH,
    TrainerConfig,
    TrainingReport,
    declared_test_records,
    dump_report,
    load_config,
    steps_per_epoch,
)
from ppml_runtime.training.errors import InvalidConfigError, TrainerError

if TYPE_CHECKING:
    import numpy as np

    from ppml_runtime.release.mechanism import EvaluationSums, ReleasedMetrics
    from ppml_runtime.training.data import SplitData
    from ppml_runtime.training.dp_sgd import DpSgdResult

logger = logging.getLogger(__name__)

#: The runtime refuses a config whose charge is this much below its own accountant's figure.
EPSILON_TOLERANCE = 0.05


def termination_message_path() -> Path:
    """Where the report goes (overridable for tests and local runs)."""
    return Path(os.environ.get(ENV_TERMINATION_MESSAGE_PATH, TERMINATION_MESSAGE_PATH))


def write_report(report: TrainingReport) -> None:
    """Write the report to the termination message path (best effort) and log it."""
    text = dump_report(report)
    path = termination_message_path()
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        logger.warning("Failed to write the report to %s: %s", path, err)
    logger.info("Reported %s", text)


def _rank_and_world(config: TrainerConfig) -> tuple[int, int]:
    workers = config.distributed.workers
    if workers == 1:
        return 0, 1
    try:
        rank, world = int(os.environ[ENV_RANK]), int(os.environ[ENV_WORLD_SIZE])
    except (KeyError, ValueError) as err:
        raise InvalidConfigError(
            f"distributed.workers is {workers} but ${ENV_RANK} and ${ENV_WORLD_SIZE} are not "
            "both set to integers"
        ) from err
    if world != workers or not 0 <= rank < world:
        raise InvalidConfigError(
            f"distributed.workers is {workers} but ${ENV_WORLD_SIZE} is {world} and ${ENV_RANK} "
            f"is {rank}"
        )
    return rank, world


def preflight_epsilon(config: TrainerConfig) -> float:
    """Epsilon of the configured steps by the runtime's accountant, before any training."""
    from opacus.accountants import create_accountant

    privacy = config.privacy
    accountant = create_accountant(mechanism=privacy.accountant)
    accountant.history = [
        (privacy.noise_multiplier_value, privacy.sample_rate_value, privacy.steps)
    ]
    return float(accountant.get_epsilon(delta=privacy.delta_value))


def _device() -> tuple[Any, str]:
    import torch

    if torch.cuda.is_available():
        index = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
        dev = torch.device("cuda", index)
        return dev, f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return torch.device("cpu"), "cpu"


def _broadcast(obj: Any, distributed: bool) -> Any:
    if not distributed:
        return obj
    import torch.distributed as dist

    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _release(
    config: TrainerConfig,
    rank: int,
    result: DpSgdResult,
    split: SplitData,
    correct: np.ndarray,
    losses: np.ndarray,
) -> tuple[EvaluationSums, ReleasedMetrics | None, str | None]:
    """Sum the test split's per-record figures; on rank 0, release the metrics and the model.

    Returns the exact sums (owner-side only), the released metrics (or ``None``) and the
    delivered model's SHA-256 (or ``None``).
    """
    from ppml_runtime.release.artifact import build_card, deliver_model
    from ppml_runtime.release.mechanism import EvaluationSums, release_test_metrics

    release = config.release
    sums = EvaluationSums.of(
        correct, losses, release.loss_bound_value if release is not None else math.inf
    )
    # The exact figures stay owner-side (logs, and the report the operator routes owner-side).
    logger.info(
        "Evaluated job %s on %d test records: accuracy %.4f, loss %.4f",
        config.job.name,
        sums.records,
        sums.accuracy,
        sums.mean_loss,
    )
    if rank != 0 or release is None:
        return sums, None, None
    test_records = declared_test_records(config.data)
    released = release_test_metrics(sums, release.metrics_noise_multiplier_value, test_records)
    if released is not None:
        logger.info(
            "Released test accuracy %.4f and loss %.4f of job %s (noise multiplier %s)",
            released.accuracy,
            released.loss,
            config.job.name,
            release.metrics_noise_multiplier,
        )
    if release.model_dir is None:
        return sums, released, None
    card = build_card(
        config,
        epsilon=result.epsilon,
        steps=result.steps_completed,
        train_records=int(split.y_train.shape[0]),
        test_records=test_records,
        released=released,
        created=datetime.now(UTC),
    )
    model_sha256 = deliver_model(
        config,
        result.model,
        num_features=split.num_features,
        num_classes=split.num_classes,
        image_shape=split.image_shape,
        card=card,
    )
    return sums, released, model_sha256


def train(config: TrainerConfig) -> TrainingReport:
    """Train as the config says and return the report (the caller writes it).

    Raises
    ------
    InvalidConfigError
        When the config cannot be honoured.
    DataMismatchError
        When the training split differs from ``data.numRecords``.

    """
    import torch

    from ppml_runtime.training.checkpoint import DirectoryCheckpointing
    from ppml_runtime.training.data import build_dataset
    from ppml_runtime.training.dp_sgd import (
        ArrayDataset,
        DpSgdParams,
        evaluate_records,
        train_private,
    )
    from ppml_runtime.training.metrics import ProgressGauges
    from ppml_runtime.training.models import build_model

    started = time.monotonic()
    privacy = config.privacy
    expected = preflight_epsilon(config)
    charged = privacy.charged_epsilon_value
    if expected > charged * (1 + EPSILON_TOLERANCE):
        raise InvalidConfigError(
            f"privacy.chargedEpsilon {privacy.charged_epsilon} is below the {expected:.4g} that "
            f"{privacy.steps} steps at noiseMultiplier {privacy.noise_multiplier} and sampleRate "
            f"{privacy.sample_rate} cost by the runtime's {privacy.accountant} accountant"
        )
    rank, world = _rank_and_world(config)
    device, device_name = _device()
    distributed = world > 1
    if distributed:
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, init_method="env://")
        logger.info("Joined process group as rank %d of %d (%s)", rank, world, backend)
    try:
        split = build_dataset(config.data)
        model = build_model(config.model, split.num_features, split.num_classes, split.image_shape)
        train_set = ArrayDataset(torch.from_numpy(split.x_train), torch.from_numpy(split.y_train))
        checkpointing = None
        resume = None
        if config.checkpoint is not None:
            identity = {
                "jobUid": config.job.uid,
                "noiseMultiplier": privacy.noise_multiplier,
                "sampleRate": privacy.sample_rate,
                "maxGradNorm": privacy.max_grad_norm,
                "steps": privacy.steps,
            }
            every = max(1, min(200, steps_per_epoch(privacy.sample_rate_value)))
            if rank == 0:
                checkpointing = DirectoryCheckpointing(config.checkpoint.dir, identity, every)
                resume = checkpointing.load()
            resume = _broadcast(resume, distributed)
            if resume is not None:
                logger.info(
                    "Resumed job %s from step %d (%d steps spent before)",
                    config.job.name,
                    resume.model_step,
                    resume.steps_spent,
                )
        gauges = ProgressGauges(
            config.metrics_port if rank == 0 else 0,
            privacy.steps,
            steps_per_epoch(privacy.sample_rate_value),
        )
        try:
            result = train_private(
                model,
                train_set,
                DpSgdParams.from_config(config),
                device=device,
                distributed=distributed,
                resume=resume,
                checkpointing=checkpointing,
                on_step=gauges.update,
            )
        finally:
            gauges.close()
        correct, losses = evaluate_records(
            result.model, torch.from_numpy(split.x_test), torch.from_numpy(split.y_test), device
        )
    finally:
        if distributed:
            torch.distributed.destroy_process_group()
    sums, released, model_sha256 = _release(config, rank, result, split, correct, losses)
    if result.epsilon > charged * (1 + 1e-9):
        logger.warning(
            "Measured epsilon %.6g above the %.6g charged for job %s",
            result.epsilon,
            charged,
            config.job.name,
        )
    return TrainingReport(
        status="ok",
        steps_completed=result.steps_completed,
        epochs=result.epochs,
        epsilon=result.epsilon,
        delta=privacy.delta_value,
        accountant=privacy.accountant,
        test_accuracy=None if math.isnan(sums.accuracy) else sums.accuracy,
        test_loss=None if not math.isfinite(sums.mean_loss) else sums.mean_loss,
        released_test_accuracy=None if released is None else released.accuracy,
        released_test_loss=None if released is None else released.loss,
        model_sha256=model_sha256,
        train_records=len(train_set),
        test_records=int(split.y_test.shape[0]),
        split_seed=split.split_seed,
        wall_seconds=time.monotonic() - started,
        device=device_name,
        grad_sample_mode=result.grad_sample_mode,  # type: ignore[arg-type]
        resumed_from_step=result.resumed_from_step,
        steps_discarded=result.steps_discarded or None,
    )


def run_trainer(config_path: str) -> int:
    """Run the trainer role end to end and return the process exit code.

    Parameters
    ----------
    config_path
        The trainer config file.

    """
    try:
        config = load_config(config_path)
    except (OSError, ValidationError, ValueError) as err:
        message = f"Invalid trainer config {config_path}: {err}"
        logger.error("%s", message)
        write_report(TrainingReport(status="error", error=message))
        return InvalidConfigError.exit_code
    try:
        report = train(config)
    except TrainerError as err:
        logger.error("Failed job %s: %s", config.job.name, err)
        write_report(TrainingReport(status="error", error=str(err)))
        return err.exit_code
    except Exception as err:  # report every failure; the pod's exit code says it failed
        logger.exception("Failed job %s", config.job.name)
        write_report(TrainingReport(status="error", error=f"{type(err).__name__}: {err}"))
        return 1
    write_report(report)
    return 0
