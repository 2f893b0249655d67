"""A checkout under /tmp stays visible inside pods, whose /tmp is private."""

from __future__ import annotations

import sys

import pytest

from devcluster.nodeagent import launch


@pytest.mark.parametrize(
    ("repo", "prefix", "expected"),
    [
        pytest.param("/work/main", "/work/main/.venv", [], id="outside /tmp needs nothing"),
        pytest.param(
            "/tmp/ci-run", "/tmp/ci-run/.venv", ["/tmp/ci-run"],
            id="checkout under /tmp is bound back once, venv inside it included",
        ),
        pytest.param(
            "/work/main", "/tmp/venvs/py311", ["/tmp/venvs/py311"],
            id="a venv under /tmp is bound back",
        ),
    ],
)
def test_host_code_under_tmp(
    monkeypatch: pytest.MonkeyPatch, repo: str, prefix: str, expected: list[str]
) -> None:
    monkeypatch.setattr(launch, "REPO_ROOT", repo)
    monkeypatch.setattr(sys, "prefix", prefix)
    monkeypatch.setattr(launch.os.path, "realpath", lambda p: p)
    assert [m["dst"] for m in launch._host_code_under_tmp()] == expected
    assert all(m["src"] == m["dst"] for m in launch._host_code_under_tmp())
