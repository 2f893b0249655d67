"""Fixtures for the operator's integration tests: CRDs installed, the operator as a subprocess."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from op_helpers import REPO, Kube, Operator

from ppml_operator import k8s


@pytest.fixture(scope="session")
def crds(devcluster: Any) -> None:
    result = devcluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds")
    )
    assert result.returncode == 0, result.stderr
    for crd in ("privacybudgets", "privatetrainingjobs", "federatedjobs"):
        devcluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{crd}.ppml.dev", "--timeout=60s"
        )


@pytest.fixture
def kube(devcluster: Any, crds: None, namespace: str) -> Iterator[Kube]:
    client = k8s.Client(k8s.load_configuration(str(devcluster.kubeconfig)))
    # Every pod of these tests must meet the restricted Pod Security Standard.
    devcluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
        "--overwrite",
    )
    yield Kube(client, namespace, devcluster.kubectl)
    client.close()


@pytest.fixture
def operator(devcluster: Any, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    handle = Operator(namespace, Path(devcluster.kubeconfig), tmp_path)
    yield handle
    handle.stop()


@pytest.fixture
def operator_factory(
    devcluster: Any, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., Operator]]:
    made: list[Operator] = []

    def make(**env: str) -> Operator:
        sub = tmp_path / f"op{len(made)}"
        sub.mkdir()
        handle = Operator(namespace, Path(devcluster.kubeconfig), sub, env=dict(env))
        made.append(handle)
        return handle

    yield make
    for handle in made:
        handle.stop()
