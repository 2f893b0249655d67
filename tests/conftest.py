"""Shared test configuration: tier markers by directory, and the devcluster fixtures.

Tests under ``tests/unit`` are marked ``unit``, ``tests/integration`` ``integration`` and
``tests/e2e`` ``e2e``. The session fixture ``devcluster`` uses a running devcluster when its
kubeconfig exists and ``/readyz`` answers, and otherwise starts one with ``python -m devcluster
up`` and stops it when the test run ends (also under pytest-xdist: the controller process stops
it). Nothing here imports devcluster or touches a cluster unless a test asks for the fixture, so
unit tests never start one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from devcluster.cluster import Cluster

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
TIERS = ("unit", "integration", "e2e")

# The repository's devcluster/ folder would shadow the package as a namespace portion when the
# working directory is on sys.path; pytest's ``pythonpath`` setting (pyproject.toml) puts
# devcluster/src first, so the regular package wins (no sys.path edits here).
RUN_ENV = "DEVCLUSTER_TEST_RUN"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            tier = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if not _is_worker(config):
        os.environ.setdefault(RUN_ENV, secrets.token_hex(8))


def _state_dir() -> Path:
    root = os.environ.get("DEVCLUSTER_STATE_DIR")
    return Path(root).resolve() if root else REPO / ".devcluster"


def _marker() -> Path:
    return _state_dir() / "started-by-test-run"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _is_worker(session.config):
        return
    marker = _marker()
    if marker.exists() and marker.read_text().strip() == os.environ.get(RUN_ENV):
        subprocess.run([sys.executable, "-m", "devcluster", "down"], check=False)
        marker.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def devcluster() -> Iterator[Cluster]:
    """A running devcluster (started for this test run if none was running)."""
    from devcluster import cluster, controlplane
    from devcluster.paths import state_paths
    from devcluster.tools import bin_dir

    paths = state_paths()
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.root / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        running = controlplane.running(paths)
        if cluster.is_up(paths) and all(running.values()):
            handle = cluster.Cluster(paths, bin_dir(), started=False)
        else:
            # Starts what is missing; only a cluster started from nothing is this run's to stop.
            subprocess.run([sys.executable, "-m", "devcluster", "up"], check=True)
            fresh = not any(running.values())
            if fresh:
                _marker().write_text(os.environ.get(RUN_ENV, "unknown") + "\n")
            handle = cluster.Cluster(paths, bin_dir(), started=fresh)
    yield handle


def _slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return s[:40].strip("-") or "t"


@pytest.fixture
def namespace(devcluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for finalization)."""
    name = f"t-{_slug(request.node.name)}-{secrets.token_hex(3)}"
    api = devcluster.api()
    api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": name}})
    # The ServiceAccount controller creates "default" shortly after the namespace.
    import time

    from devcluster.kubeapi import ApiError

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default")
            break
        except ApiError:
            time.sleep(0.1)
    yield name
    with contextlib.suppress(Exception):
        api.delete(f"/api/v1/namespaces/{name}")
