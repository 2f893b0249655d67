"""Render the Helm chart with the real helm binary and hand the objects to the tests."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "ppml-operator"
RELEASE = "ppml"
NAMESPACE = "ppml-system"
#: The Kubernetes version devcluster runs (helm template otherwise assumes an old default).
KUBE = "1.34.4"


def helm_binary() -> str:
    """Return helm from PATH (make test puts the tools directory there) or build-tools.sh."""
    found = shutil.which("helm")
    if found:
        return found
    from devcluster import tools

    return tools.find(tools.bin_dir(build=True), "helm")


@dataclass
class Rendered:
    """The objects `helm template` produced, with lookups by kind and name."""

    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        hits = [
            o
            for o in self.of_kind(kind)
            if o["metadata"]["name"] == name
            and (namespace is None or o["metadata"].get("namespace") == namespace)
        ]
        assert len(hits) == 1, f"expected one {kind} {name}, found {len(hits)}"
        return hits[0]

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.of_kind(kind)}


class HelmError(Exception):
    """helm exited non-zero; the message is its stderr."""


def run_template(helm: str, *set_args: str, values: dict[str, Any] | None = None) -> Rendered:
    """Run ``helm template`` on the chart and parse every document it printed."""
    cmd = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE]
    for s in set_args:
        cmd += ["--set", s]
    stdin = None
    if values is not None:
        cmd += ["--values", "-"]
        stdin = yaml.safe_dump(values)
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)
    if p.returncode:
        raise HelmError(p.stderr)
    docs = [d for d in yaml.safe_load_all(p.stdout) if d]
    return Rendered(docs)


@pytest.fixture(scope="session")
def helm() -> str:
    return helm_binary()


@pytest.fixture(scope="session")
def render(helm: str) -> Iterator[Callable[..., Rendered]]:
    cache: dict[tuple[Any, ...], Rendered] = {}

    def _render(*set_args: str, values: dict[str, Any] | None = None) -> Rendered:
        key = (set_args, yaml.safe_dump(values) if values is not None else None)
        if key not in cache:
            cache[key] = run_template(helm, *set_args, values=values)
        return cache[key]

    yield _render


@pytest.fixture(scope="session")
def default(render: Callable[..., Rendered]) -> Rendered:
    return render()
