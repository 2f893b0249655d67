"""The ``fetch-model`` role: download a served model, verify it, install it atomically.

See :mod:`ppml_runtime.release.fetch`. Runs in the analyst's namespace with the analyst's claim
mounted. Exit codes: 0 when the verified model is at ``--dest``; 1 on any failure, with a
one-line error (and nothing at ``--dest``).
"""

from __future__ import annotations

import argparse
import logging

HELP = "fetch a served model into a new directory, checking every file's sha256"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``fetch-model`` role's options."""
    parser.add_argument("--url", required=True, help="the serve-model base URL (http://host:port)")
    parser.add_argument("--dest", required=True, help="the directory to create (must not exist)")
    parser.add_argument(
        "--expect-sha256", required=True, help="sha256 of model.safetensors the trainer reported"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds for the whole fetch, retries included (default 600)",
    )


def run(args: argparse.Namespace) -> int:
    """Fetch the model and return the exit code."""
    from ppml_runtime.release.fetch import FetchError, fetch_model

    try:
        fetch_model(args.url, args.dest, args.expect_sha256, args.timeout)
    except FetchError as err:
        logger.error("Failed to fetch the model: %s", err)
        return 1
    return 0
