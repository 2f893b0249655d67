"""Fixtures for the operator's integration tests: CRDs installed, the operator as a subprocess."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from op_helpers import REPO, Kube, Operator, drop_finalizers

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
def log_dir(namespace: str) -> Path:
    """Where the operator's logs go: outside pytest's rotating temporary directories."""
    root = Path(os.environ.get("PPML_TEST_LOG_DIR", "/tmp/ppml-operator-test-logs"))
    path = root / namespace
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def operator(devcluster: Any, namespace: str, log_dir: Path) -> Iterator[Operator]:
    handle = Operator(namespace, Path(devcluster.kubeconfig), log_dir)
    yield handle
    handle.stop()
    _drop(devcluster, namespace)


@pytest.fixture
def operator_factory(
    devcluster: Any, namespace: str, log_dir: Path
) -> Iterator[Callable[..., Operator]]:
    made: list[Operator] = []

    def make(**env: str) -> Operator:
        sub = log_dir / f"op{len(made)}"
        sub.mkdir(exist_ok=True)
        handle = Operator(namespace, Path(devcluster.kubeconfig), sub, env=dict(env))
        made.append(handle)
        return handle

    yield make
    for handle in made:
        handle.stop()
    _drop(devcluster, namespace)


def _drop(devcluster: Any, namespace: str) -> None:
    client = k8s.Client(k8s.load_configuration(str(devcluster.kubeconfig)))
    try:
        drop_finalizers(client, namespace)
    finally:
        client.close()
