"""The supernode role restarts a SuperNode that could not connect, and only that one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ppml_runtime.federated.roles import supervise_supernode


def _flaky(counter: Path, failures: int, final: int) -> list[str]:
    # Fails like a refused SuperNode (prints Flower's code 305, exits 1) `failures` times, then
    # exits with `final` (a crash prints something else).
    script = (
        "import pathlib, sys\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n + 1))\n"
        f"refused = n < {failures}\n"
        "print('ERROR : Exit Code: 305' if refused else 'Traceback: boom', flush=True)\n"
        f"sys.exit(1 if refused else {final})\n"
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
    assert code == 1
    assert 1 <= int(counter.read_text()) < 50
