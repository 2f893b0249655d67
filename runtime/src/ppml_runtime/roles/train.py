"""The ``train`` role: centralized DP-SGD training from a trainer config."""

from __future__ import annotations

import argparse
import os

from ppml_runtime.contract import CONFIG_PATH, ENV_CONFIG

HELP = "train a model with DP-SGD (Opacus) from a trainer config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` role's options."""
    parser.add_argument(
        "--config",
        default=os.environ.get(ENV_CONFIG, CONFIG_PATH),
        help=f"trainer config (JSON or YAML); default ${ENV_CONFIG} or {CONFIG_PATH}",
    )


def run(args: argparse.Namespace) -> int:
    """Run the trainer and return its exit code."""
    from ppml_runtime.training.trainer import run_trainer

    return run_trainer(args.config)
