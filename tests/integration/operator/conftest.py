"""Fixtures for the operator's integration tests: CRDs installed, the operator as a subprocess.

Most tests share one operator for the whole session (``python -m ppml_operator --namespace
'ppmlop-*'``), each in a fresh ``ppmlop-...`` namespace. Tests that need an operator of their
own (crash points, injected faults, restarts, two operators) ask for the ``operator`` or
``operator_factory`` fixture and get a ``ppmlopx-...`` namespace that the shared one does not
watch.
"""

from __future__ import annotations

import os
import re
import secrets
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


SHARED = "ppmlop-"
OWN = "ppmlopx-"


def _log_root() -> Path:
    return Path(os.environ.get("PPML_TEST_LOG_DIR", "/tmp/ppml-operator-test-logs"))


@pytest.fixture(scope="session")
def shared_operator(devcluster: Any, crds: None) -> Iterator[Operator]:
    log = _log_root() / f"shared-{os.getpid()}"
    log.mkdir(parents=True, exist_ok=True)
    handle = Operator(f"{SHARED}*", Path(devcluster.kubeconfig), log).start()
    yield handle
    handle.stop()
    client = k8s.Client(k8s.load_configuration(str(devcluster.kubeconfig)))
    try:
        for item in client.request("GET", "/api/v1/namespaces").get("items", []):
            name = item["metadata"]["name"]
            if name.startswith(SHARED):
                drop_finalizers(client, name)
    finally:
        client.close()


@pytest.fixture
def namespace(devcluster: Any, crds: None, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace: served by the shared operator unless the test runs its own."""
    own = bool({"operator", "operator_factory"} & set(request.fixturenames))
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))
    name = f"{OWN if own else SHARED}{slug[:40].strip('-')}-{secrets.token_hex(3)}"
    result = devcluster.kubectl("create", "namespace", name)
    assert result.returncode == 0, result.stderr
    if not own:
        request.getfixturevalue("shared_operator")
    yield name
    devcluster.kubectl("delete", "namespace", name, "--wait=false")


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
    path = _log_root() / namespace
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
