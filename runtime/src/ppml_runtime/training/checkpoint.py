"""Checkpoints on a volume, written so that a restarted pod never spends more than was charged.

Two files live in the checkpoint directory:

- ``journal.json`` — a write-ahead record of the steps that *may* have run. Before each chunk
  of ``every`` steps the trainer durably raises ``stepsReserved`` to the chunk's end (write to a
  temporary file, fsync, rename). A pod that dies mid-chunk may have executed any of those steps.
- ``state.pt`` — model, optimizer, accountant and torch RNG state at the end of a chunk.

On resume the steps already spent are ``max(stepsReserved, state steps)``: the model restarts
from the last saved state, the accountant is charged for every reserved step (lost ones too),
and only the remainder of ``privacy.steps`` is run. Progress of a lost chunk is discarded, its
privacy cost is not.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ppml_runtime.training.dp_sgd import ResumeState
from ppml_runtime.training.errors import InvalidConfigError

logger = logging.getLogger(__name__)

JOURNAL_FILE = "journal.json"
STATE_FILE = "state.pt"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class DirectoryCheckpointing:
    """Checkpoints in one directory, owned by one job (its UID and privacy parameters).

    Parameters
    ----------
    directory
        The checkpoint directory (created if missing).
    identity
        What the checkpoint belongs to (job UID, noise multiplier, sampling rate, clipping norm,
        steps); a directory holding another identity's checkpoint is refused.
    every
        Steps per chunk (reservation and save interval).

    """

    def __init__(self, directory: str | Path, identity: dict[str, Any], every: int = 50) -> None:
        self.directory = Path(directory)
        self.identity = identity
        self.every = max(1, every)
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def journal_path(self) -> Path:
        """The write-ahead journal."""
        return self.directory / JOURNAL_FILE

    @property
    def state_path(self) -> Path:
        """The saved training state."""
        return self.directory / STATE_FILE

    def reserve(self, steps_upto: int) -> None:
        """Durably record that steps up to ``steps_upto`` may be executed."""
        record = {"stepsReserved": steps_upto, "identity": self.identity}
        _write_atomic(self.journal_path, json.dumps(record, sort_keys=True).encode())

    def save(self, state: ResumeState) -> None:
        """Durably save the training state after ``state.steps_spent`` steps."""
        import io

        import torch

        buffer = io.BytesIO()
        torch.save(
            {
                "identity": self.identity,
                "stepsSpent": state.steps_spent,
                "modelStep": state.model_step,
                "model": state.model_state,
                "optimizer": state.optimizer_state,
                "accountant": state.accountant_state,
                "torchRng": state.torch_rng_state,
            },
            buffer,
        )
        _write_atomic(self.state_path, buffer.getvalue())
        logger.info("Saved checkpoint at step %d to %s", state.steps_spent, self.state_path)

    def _check_identity(self, found: Any, where: Path) -> None:
        if found != self.identity:
            raise InvalidConfigError(
                f"checkpoint.dir {self.directory} holds {where.name} of another job or other "
                f"privacy parameters ({found}); refusing to resume from it"
            )

    def load(self) -> ResumeState | None:
        """Return the state to resume from, or ``None`` when nothing was ever reserved.

        Raises
        ------
        InvalidConfigError
            When the directory belongs to another job or other privacy parameters.

        """
        if not self.journal_path.exists():
            return None
        journal = json.loads(self.journal_path.read_text(encoding="utf-8"))
        self._check_identity(journal.get("identity"), self.journal_path)
        reserved = int(journal["stepsReserved"])
        if not self.state_path.exists():
            return ResumeState(steps_spent=reserved, model_step=0)
        import torch

        saved = torch.load(self.state_path, map_location="cpu", weights_only=True)
        self._check_identity(saved.get("identity"), self.state_path)
        spent = max(reserved, int(saved["stepsSpent"]))
        return ResumeState(
            steps_spent=spent,
            model_step=int(saved["modelStep"]),
            model_state=saved["model"],
            optimizer_state=saved["optimizer"],
            accountant_state=saved["accountant"],
            torch_rng_state=saved["torchRng"],
        )
