"""Fixtures of the federation integration tests (the harness lives in ``fed_harness``).

flwr imports typer, which uses a click API deprecated in click 8.3, and pytest turns warnings
into errors, so flwr is imported once here with that warning silenced.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import flwr.common  # noqa: F401

from fed_harness import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def dump_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[list[Path]]:
    logs: list[Path] = []
    yield logs
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for log in logs:
            for path in sorted(log.glob("*.log")):
                print(f"----- {path.name}\n{path.read_text(errors='replace')[-3000:]}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)
