"""Fetch a served model into the analyst's storage, verified, atomically.

Runs in the analyst's namespace with the analyst's claim mounted. It reads the ``serve-model``
role's manifest, checks that the served ``model.safetensors`` is the one the trainer reported
(``--expect-sha256``, passed by the operator), downloads every file into a fresh sibling of the
destination while hashing it, checks each size and digest against the manifest, renames the
directory into place (a half-fetched model never appears), and tells the server it is done.
Connection errors are retried until the deadline: the server's pod may start later. Standard
library only.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ppml_runtime.contract import MODEL_CONFIG_FILE, MODEL_FILES, MODEL_WEIGHTS_FILE
from ppml_runtime.release.files import CHUNK, fsync_dir

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Seconds between attempts while the server cannot be reached.
RETRY_SECONDS = 1.0
#: Longest wait for one socket operation.
SOCKET_TIMEOUT = 30.0
#: HTTP statuses worth retrying (a proxy or Service in front of a server not yet up).
_RETRY_STATUSES = frozenset({502, 503, 504})


class FetchError(Exception):
    """The model could not be fetched, or what was fetched is not what the trainer delivered."""


def _retryable(err: Exception) -> bool:
    if isinstance(err, urllib.error.HTTPError):
        return err.code in _RETRY_STATUSES
    return isinstance(err, urllib.error.URLError | http.client.HTTPException | OSError)


def _open(request: urllib.request.Request | str, deadline: float) -> Any:
    """Open a URL, retrying connection errors until ``deadline`` (``time.monotonic``)."""
    while True:
        remaining = deadline - time.monotonic()
        try:
            return urllib.request.urlopen(request, timeout=max(1.0, min(SOCKET_TIMEOUT, remaining)))
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            url = request if isinstance(request, str) else request.full_url
            if not _retryable(err) or time.monotonic() + RETRY_SECONDS > deadline:
                raise FetchError(f"{url} failed: {_reason(err)}") from err
            logger.debug("Retrying %s after %s", url, _reason(err))
            time.sleep(RETRY_SECONDS)


def _reason(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return f"{type(err).__name__}: {err}"


def parse_manifest(raw: object) -> dict[str, tuple[int, str]]:
    """Check a manifest and return ``{name: (size, sha256)}``.

    Raises
    ------
    FetchError
        When it names a file outside ``MODEL_FILES``, a file twice, a bad size or digest, or
        lacks the weights or ``config.json``.

    """
    files = raw.get("files") if isinstance(raw, dict) else None
    if not isinstance(files, list):
        raise FetchError("the manifest has no list of files")
    found: dict[str, tuple[int, str]] = {}
    for entry in files:
        if not isinstance(entry, dict):
            raise FetchError("the manifest holds an entry that is not an object")
        name, size, digest = entry.get("name"), entry.get("size"), entry.get("sha256")
        if name not in MODEL_FILES or name in found:
            raise FetchError(
                f"the manifest names {name!r}, not one of {', '.join(MODEL_FILES)}"
                if name not in MODEL_FILES
                else f"the manifest names {name} twice"
            )
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise FetchError(f"the manifest gives {name} the size {size!r}")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise FetchError(f"the manifest gives {name} the sha256 {digest!r}")
        found[name] = (size, digest)
    missing = [n for n in (MODEL_WEIGHTS_FILE, MODEL_CONFIG_FILE) if n not in found]
    if missing:
        raise FetchError(f"the manifest lacks {', '.join(missing)}")
    return found


def _download(url: str, path: Path, size: int, digest: str, deadline: float) -> None:
    """Download ``url`` to ``path`` and check its size and SHA-256 against the manifest's."""
    while True:
        hasher = hashlib.sha256()
        received = 0
        try:
            with _open(url, deadline) as response, open(path, "wb") as out:
                while chunk := response.read(CHUNK):
                    received += len(chunk)
                    if received > size:
                        raise FetchError(f"{path.name} is longer than the manifest's {size} bytes")
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except (http.client.HTTPException, ConnectionError, TimeoutError) as err:  # cut off
            if time.monotonic() + RETRY_SECONDS > deadline:
                raise FetchError(f"{url} failed: {_reason(err)}") from err
            time.sleep(RETRY_SECONDS)
            continue
        break
    if received != size:
        raise FetchError(f"{path.name} has {received} bytes, not the manifest's {size}")
    if hasher.hexdigest() != digest:
        raise FetchError(
            f"{path.name} has sha256 {hasher.hexdigest()}, not the manifest's {digest}: "
            "refusing a file altered in transit or at rest"
        )


def fetch_model(url: str, dest: str | Path, expect_sha256: str, timeout: float) -> None:
    """Fetch the model served at ``url`` into the new directory ``dest``, verified.

    Parameters
    ----------
    url
        The ``serve-model`` role's base URL (``http://host:port``).
    dest
        The directory to create (it must not exist; missing parents are created).
    expect_sha256
        The SHA-256 of ``model.safetensors`` the trainer reported.
    timeout
        Seconds for the whole fetch, retries included.

    Raises
    ------
    FetchError
        On any failure; nothing is left at ``dest`` then.

    """
    deadline = time.monotonic() + timeout
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise FetchError(f"--url {url} is not an http:// or https:// URL")
    expected = expect_sha256.lower()
    if not _SHA256.match(expected):
        raise FetchError(f"--expect-sha256 {expect_sha256} is not a hex SHA-256")
    target = Path(dest)
    if target.exists() or target.is_symlink():
        raise FetchError(f"--dest {target} exists already; a delivered model is never overwritten")
    with _open(f"{base}/manifest", deadline) as response:
        try:
            manifest = parse_manifest(json.loads(response.read()))
        except json.JSONDecodeError as err:
            raise FetchError(f"{base}/manifest is not JSON: {err}") from err
    served = manifest[MODEL_WEIGHTS_FILE][1]
    if served != expected:
        raise FetchError(
            f"the served {MODEL_WEIGHTS_FILE} has sha256 {served}, not the {expected} the "
            "trainer reported: refusing it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        staging.chmod(0o755)
        for name, (size, digest) in manifest.items():
            _download(f"{base}/files/{name}", staging / name, size, digest, deadline)
            logger.info("Fetched %s (%d bytes, sha256 %s)", name, size, digest)
        fsync_dir(staging)
        # os.rename would replace an empty directory created meanwhile: check right before.
        if target.exists() or target.is_symlink():
            raise FetchError(f"--dest {target} appeared while fetching; it is left as found")
        os.rename(staging, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Fetched the model from %s into %s", base, target)
    _done(base, min(deadline, time.monotonic() + SOCKET_TIMEOUT))


def _done(base: str, deadline: float) -> None:
    """Tell the server the files are verified (best effort: the model is already in place)."""
    request = urllib.request.Request(f"{base}/done", data=b"", method="POST")
    try:
        with _open(request, deadline):
            pass
    except FetchError as err:
        logger.warning("Failed to tell the server it is done: %s", err)
