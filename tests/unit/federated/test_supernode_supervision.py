"""The supernode role restarts a SuperNode that could not connect, and only that one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ppml_runtime.federated.roles import FLOWER_EXIT_CONNECTION_FAILED, supervise_supernode


def _flaky(counter: Path, failures: int, final: int) -> list[str]:
    # Exits with Flower's connection-failure code `failures` times, then with `final`.
    script = (
        "import pathlib, sys\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n + 1))\n"
        f"sys.exit({FLOWER_EXIT_CONNECTION_FAILED} if n < {failures} else {final})\n"
    )
    return [sys.executable, "-c", script]


@pytest.mark.parametrize(
    ("failures", "final", "attempts"),
    [(2, 0, 3), (0, 1, 1), (1, 3, 2)],
    ids=["refused twice then admitted", "a crash is not retried", "refused then data error"],
)
def test_only_connection_failures_are_retried(tmp_path, failures, final, attempts):
    counter = tmp_path / "attempts"
    code = supervise_supernode(
        _flaky(counter, failures, final), "silo-0", deadline_seconds=60, backoff_seconds=0.01
    )
    assert code == final
    assert int(counter.read_text()) == attempts


def test_retrying_stops_at_the_deadline(tmp_path):
    counter = tmp_path / "attempts"
    code = supervise_supernode(
        _flaky(counter, 10_000, 0), "silo-0", deadline_seconds=0.2, backoff_seconds=0.05
    )
    assert code == FLOWER_EXIT_CONNECTION_FAILED
    assert 1 <= int(counter.read_text()) < 50
