"""Serve a delivered model directory read-only over HTTP, until the fetcher says it is done.

Runs in the data owner's namespace with the model directory mounted read-only. It serves
exactly the model files found directly in the directory when it starts (``MODEL_FILES``;
regular files, no links), by exact name, so no request path can reach anything else:

- ``GET /manifest``: ``{"files": [{"name", "size", "sha256"}, ...]}``;
- ``GET /files/<name>``: one file's bytes;
- ``POST /done``: the fetcher has verified the files; the server exits 0.

With no ``POST /done`` within the timeout it exits 1. Standard library only.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ppml_runtime.contract import MODEL_FILES
from ppml_runtime.release.files import CHUNK, manifest_of, model_files

logger = logging.getLogger(__name__)


class ModelServer(ThreadingHTTPServer):
    """An HTTP server over one model directory; ``done`` is set by ``POST /done``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], directory: str | Path) -> None:
        self.directory = Path(directory)
        self.files = model_files(self.directory)
        self.manifest = json.dumps(manifest_of(self.directory)).encode()
        self.done = threading.Event()
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: ModelServer
    protocol_version = "HTTP/1.1"

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    def _reply(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._reply(status, (message + "\n").encode(), "text/plain; charset=utf-8")

    def do_GET(self) -> None:
        path = self._path()
        if path == "/manifest":
            self._reply(HTTPStatus.OK, self.server.manifest, "application/json")
            return
        name = path.removeprefix("/files/") if path.startswith("/files/") else None
        # Exact names only: no decoding, no joining, so "..", "%2e%2e" or "/" reach nothing.
        file = self.server.files.get(name) if name is not None else None
        if file is None:
            self._error(HTTPStatus.NOT_FOUND, f"{path} is not served")
            return
        size = file.stat().st_size
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.send_header("Connection", "close")
        self.end_headers()
        with open(file, "rb") as fh:
            shutil.copyfileobj(fh, self.wfile, CHUNK)
        self.close_connection = True
        logger.info("Served %s (%d bytes) to %s", name, size, self.client_address[0])

    def do_POST(self) -> None:
        if self._path() != "/done":
            self._error(HTTPStatus.NOT_FOUND, f"{self._path()} is not served")
            return
        self._reply(HTTPStatus.OK, b"{}", "application/json")
        self.wfile.flush()
        logger.info("Received done from %s", self.client_address[0])
        self.server.done.set()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.client_address[0], *args)


def open_server(directory: str | Path, host: str, port: int) -> ModelServer:
    """Bind a server over ``directory`` and start serving it in a daemon thread.

    Raises
    ------
    ValueError
        When ``directory`` is not a directory or holds no model file.

    """
    base = Path(directory)
    if not base.is_dir():
        raise ValueError(f"--dir {base} is not a directory")
    server = ModelServer((host, port), base)
    if not server.files:
        server.server_close()
        raise ValueError(f"--dir {base} holds no model file ({', '.join(MODEL_FILES)})")
    # A short poll interval: shutdown() waits for it once /done has arrived.
    threading.Thread(
        target=server.serve_forever, args=(0.1,), name="serve-model", daemon=True
    ).start()
    logger.info(
        "Serving %s (%s) on %s:%d", base, ", ".join(server.files), *server.server_address[:2]
    )
    return server


def wait_done(server: ModelServer, timeout: float) -> int:
    """Wait for ``POST /done`` (return 0) or ``timeout`` seconds (return 1), then stop serving."""
    try:
        done = server.done.wait(timeout)
    finally:
        server.shutdown()
        server.server_close()
    if not done:
        logger.error("Timed out after %gs with no POST /done; the model was not fetched", timeout)
        return 1
    logger.info("Finished serving %s", server.directory)
    return 0


def serve_model(directory: str | Path, host: str, port: int, timeout: float) -> int:
    """Serve ``directory`` until ``POST /done`` (return 0) or ``timeout`` seconds (return 1).

    Parameters
    ----------
    directory
        The model directory (read-only is enough).
    host
        The address to listen on (``0.0.0.0``: all).
    port
        The port to listen on.
    timeout
        Seconds to wait for ``POST /done``.

    """
    try:
        server = open_server(directory, host, port)
    except (OSError, ValueError) as err:
        logger.error("Refused to serve the model: %s", err)
        return 1
    return wait_done(server, timeout)
