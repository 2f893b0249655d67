"""Domain errors of the trainer, each mapped to the exit code the operator reads."""

from __future__ import annotations

from ppml_runtime.contract import EXIT_DATA_MISMATCH, EXIT_INVALID_CONFIG


class TrainerError(Exception):
    """Base of the trainer's domain errors; ``exit_code`` is the process exit status."""

    exit_code = 1


class InvalidConfigError(TrainerError):
    """The config asks for something this runtime cannot honour (never trains)."""

    exit_code = EXIT_INVALID_CONFIG


class DataMismatchError(TrainerError):
    """The data found differs from what was declared, and so from what was paid for."""

    exit_code = EXIT_DATA_MISMATCH
