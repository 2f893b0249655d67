"""The ``load-builtin`` role: write a built-in data set to a file, as a data owner would load data.

``python -m ppml_runtime load-builtin --name Digits --dest /data/digits.npz`` writes the records
the trainer's ``Builtin`` source would use (:func:`ppml_runtime.training.data.load_builtin`, the
same data-independent scaling) as an Npz file holding arrays ``x`` (features, ``float32``, one
record per row) and ``y`` (labels, ``int64``), which a ``Volume`` source with ``format: Npz``
reads back unchanged. The two-party example (``examples/two-party/data-owner.yaml``) runs it in
a Job to fill the data owner's claim: the built-in sets are public, so they stand in for private
records in demos.

The file appears whole or not at all (written beside ``--dest``, then renamed over it), so a
retried Job never leaves a truncated file for a trainer to read. Prints one JSON line
``{"path": ..., "records": ..., "features": ..., "classes": ...}``; exit code 1 with a one-line
error on failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import get_args

from ppml_runtime.contract import BuiltinName

HELP = "write a built-in data set to an Npz file (arrays x and y), for a Volume data source"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``load-builtin`` role's options."""
    parser.add_argument(
        "--name", required=True, choices=get_args(BuiltinName), help="the built-in data set"
    )
    parser.add_argument(
        "--dest",
        required=True,
        help="the file to write (its directory must exist), e.g. /data/digits.npz",
    )


def write_builtin(name: str, dest: str) -> dict[str, object]:
    """Write built-in set ``name`` to ``dest`` as Npz arrays ``x`` and ``y``; describe it.

    Parameters
    ----------
    name
        One of :data:`ppml_runtime.contract.BuiltinName`.
    dest
        The file to create or replace. Its directory must exist.

    Returns
    -------
    dict
        ``path``, ``records``, ``features`` and ``classes`` of what was written.

    Raises
    ------
    OSError
        When the directory is missing or not writable.

    """
    import numpy as np

    from ppml_runtime.training.data import load_builtin

    records = load_builtin(name)
    target = Path(dest)
    # Written beside the target, then renamed: a rename within a directory is atomic.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            # A file object, not a path: np.savez would append ".npz" to a path. The array
            # names are the ones the Npz loader reads (data.NPZ_FEATURES, data.NPZ_LABELS).
            np.savez(fh, x=records.features, y=records.labels)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; trainers may run as another user
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {
        "path": str(target),
        "records": int(records.features.shape[0]),
        "features": int(records.features.shape[1]),
        "classes": len(set(records.labels.tolist())),
    }


def run(args: argparse.Namespace) -> int:
    """Write the data set, print one JSON line and return the exit code."""
    from ppml_runtime.training.errors import TrainerError

    try:
        result = write_builtin(args.name, args.dest)
    except (TrainerError, OSError) as err:
        logger.error("Failed to write %s to %s: %s", args.name, args.dest, err)
        return 1
    logger.info("Wrote %s records of %s to %s", result["records"], args.name, args.dest)
    print(json.dumps(result), flush=True)
    return 0
