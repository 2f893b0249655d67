"""Pure parts of devcluster: hosts files, env expansion, downward API, quantities, images."""

from __future__ import annotations

from typing import Any

import pytest

from devcluster.nodeagent.env import ConfigError, build_env, expand, field_ref, parse_quantity
from devcluster.nodeagent.hosts import render, service_entries
from devcluster.nodeagent.launch import image_entrypoint
from devcluster.nodeagent.nodes import gpu_labels

POD: dict[str, Any] = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1",
                 "labels": {"app": "a", "tier": "t"}, "annotations": {"k": "v"}},
    "spec": {"nodeName": "n", "serviceAccountName": "sa"},
    "status": {"podIP": "10.244.0.7", "podIPs": [{"ip": "10.244.0.7"}], "hostIP": "10.244.0.1"},
}


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("$(A)-$(B)", {"A": "1", "B": "2"}, "1-2"),
        ("$(MISSING) stays", {}, "$(MISSING) stays"),
        ("$$(A) is escaped", {"A": "1"}, "$(A) is escaped"),
        ("no refs", {"A": "1"}, "no refs"),
    ],
    ids=["two references", "unknown reference kept", "double dollar escapes", "plain text"],
)
def test_expand(value: str, env: dict[str, str], expected: str) -> None:
    assert expand(value, env) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("metadata.name", "p"), ("metadata.namespace", "ns"), ("metadata.uid", "u-1"),
        ("metadata.labels['tier']", "t"), ("metadata.annotations['k']", "v"),
        ("metadata.labels", 'app="a"\ntier="t"'), ("spec.nodeName", "n"),
        ("spec.serviceAccountName", "sa"), ("status.podIP", "10.244.0.7"),
        ("status.hostIP", "10.244.0.1"),
    ],
)
def test_field_ref(path: str, expected: str) -> None:
    assert field_ref(POD, path) == expected


def test_field_ref_refuses_unknown_paths() -> None:
    with pytest.raises(ConfigError, match=r"spec\.nope"):
        field_ref(POD, "spec.nope")


def test_build_env_layers_base_envfrom_then_env() -> None:
    cms = {"cfg": {"data": {"X": "from-cm", "Y": "y"}}}

    def get(kind: str, name: str) -> dict[str, Any] | None:
        return cms.get(name) if kind == "configmaps" else None

    container = {
        "envFrom": [{"configMapRef": {"name": "cfg"}}],
        "env": [{"name": "X", "value": "explicit-$(Y)"},
                {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k",
                                                               "optional": True}}}],
    }
    env = build_env(POD, container, {"PATH": "/bin", "Y": "base"}, get, {})
    assert env == {"PATH": "/bin", "X": "explicit-y", "Y": "y"}
    container["env"].append({"name": "REQ", "valueFrom": {"secretKeyRef": {"name": "s",
                                                                          "key": "k"}}})
    with pytest.raises(ConfigError, match="s key 'k' not found"):
        build_env(POD, container, {}, get, {})


@pytest.mark.parametrize(
    ("q", "expected"),
    [("500m", 0.5), ("2", 2.0), ("1Gi", 2.0**30), ("1k", 1000.0), ("128Mi", 128 * 2.0**20)],
)
def test_parse_quantity(q: str, expected: float) -> None:
    assert parse_quantity(q) == expected


def _slice(ns: str, svc: str, eps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": f"{svc}-x",
                         "labels": {"kubernetes.io/service-name": svc}}, "endpoints": eps}


def test_service_entries_pick_the_lowest_ready_address_and_headless_hostnames() -> None:
    services = {("ns", "web"): {}, ("ns", "db"): {}, ("other", "web"): {}}
    slices = {
        ("ns", "web-x"): _slice("ns", "web", [
            {"addresses": ["10.244.0.10"], "conditions": {"ready": True}},
            {"addresses": ["10.244.0.9"], "conditions": {"ready": True}},
            {"addresses": ["10.244.0.2"], "conditions": {"ready": False}},
        ]),
        ("ns", "db-x"): _slice("ns", "db", [
            {"addresses": ["10.244.0.5"], "hostname": "db-0", "conditions": {"ready": True}}]),
        ("other", "web-x"): _slice("other", "web", [{"addresses": ["10.244.0.20"]}]),
        ("ns", "orphan-x"): _slice("ns", "orphan", [{"addresses": ["10.244.0.30"]}]),
    }
    assert service_entries(services, slices) == [
        ("ns", "db", "10.244.0.5"), ("ns", "db-0.db", "10.244.0.5"),
        ("ns", "web", "10.244.0.9"), ("other", "web", "10.244.0.20"),
    ]


def test_render_gives_short_names_only_in_the_pods_namespace() -> None:
    entries = [("ns", "web", "10.244.0.9"), ("other", "web", "10.244.0.20")]
    text = render("ns", "10.244.0.7", "p", None, entries)
    lines = text.splitlines()
    assert "10.244.0.7\tp" in lines
    assert "10.244.0.9\tweb web.ns web.ns.svc web.ns.svc.cluster.local" in lines
    assert "10.244.0.20\tweb.other web.other.svc web.other.svc.cluster.local" in lines


def test_render_names_a_pod_with_hostname_and_subdomain() -> None:
    text = render("ns", "10.244.0.7", "db-0", "db", [])
    assert "10.244.0.7\tdb-0.db.ns.svc.cluster.local db-0" in text.splitlines()


@pytest.mark.parametrize(
    ("image", "known"),
    [
        ("ghcr.io/ppml-operator/ppml-runtime:0.1.0", True),
        ("ppml-runtime", True),
        ("registry:5000/x/ppml-operator@sha256:abc", True),
        ("python:3.11", False),
    ],
    ids=["registry and tag", "bare name", "registry port and digest", "other image"],
)
def test_image_entrypoint(image: str, known: bool) -> None:
    assert (image_entrypoint(image) is not None) == known


@pytest.mark.parametrize(
    ("count", "product", "expected"),
    [
        (0, "x", {"nvidia.com/gpu.present": None, "nvidia.com/gpu.count": None,
                  "nvidia.com/gpu.product": None}),
        (2, "NVIDIA H200", {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.count": "2",
                            "nvidia.com/gpu.product": "NVIDIA-H200"}),
    ],
    ids=["no GPU removes the labels", "two H200s"],
)
def test_gpu_labels(count: int, product: str, expected: dict[str, str | None]) -> None:
    assert gpu_labels(count, product) == expected
