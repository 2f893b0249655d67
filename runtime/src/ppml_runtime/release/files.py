"""The files of a delivered model directory: their names, digests and manifest (stdlib only).

A model directory is flat and holds only the names in ``MODEL_FILES``. The manifest the
``serve-model`` role publishes and the ``fetch-model`` role checks is
``{"files": [{"name": ..., "size": ..., "sha256": ...}, ...]}``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from ppml_runtime.contract import MODEL_FILES

#: Bytes read at a time when hashing or copying a file.
CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Return the SHA-256 (hex) of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_files(directory: str | Path) -> dict[str, Path]:
    """Return the model files found directly in ``directory``, by name.

    Only regular files named in ``MODEL_FILES`` count; symbolic links are skipped so that
    nothing outside the directory is ever reached through it.
    """
    base = Path(directory)
    found: dict[str, Path] = {}
    for name in MODEL_FILES:
        path = base / name
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISREG(mode):
            found[name] = path
    return found


def manifest_of(directory: str | Path) -> dict[str, Any]:
    """Return the manifest of the model files in ``directory`` (name, size, sha256 each)."""
    return {
        "files": [
            {"name": name, "size": path.stat().st_size, "sha256": sha256_file(path)}
            for name, path in model_files(directory).items()
        ]
    }


def fsync_dir(directory: str | Path) -> None:
    """Flush a directory's entries to disk (best effort), so a rename into it is durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
