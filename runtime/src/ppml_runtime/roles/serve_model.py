"""The ``serve-model`` role: serve a delivered model read-only until it is fetched.

See :mod:`ppml_runtime.release.server`. Runs in the data owner's namespace, the model directory
mounted read-only. Exit codes: 0 after ``POST /done``; 1 on timeout or when nothing can be served.
"""

from __future__ import annotations

import argparse

from ppml_runtime.contract import MODEL_SERVER_PORT

HELP = "serve a delivered model directory read-only until the fetcher posts /done"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve-model`` role's options."""
    parser.add_argument("--dir", required=True, help="the model directory (flat)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    parser.add_argument(
        "--port", type=int, default=MODEL_SERVER_PORT, help=f"default {MODEL_SERVER_PORT}"
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds to wait for /done (default 3600)"
    )


def run(args: argparse.Namespace) -> int:
    """Serve the model and return the exit code."""
    from ppml_runtime.release.server import serve_model

    return serve_model(args.dir, args.host, args.port, args.timeout)
