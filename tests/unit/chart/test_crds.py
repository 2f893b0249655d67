"""The chart's CRDs are the generated ones, switchable, and kept on uninstall by default."""

from __future__ import annotations

import subprocess

import yaml

from .conftest import REPO

CRD_SOURCES = sorted((REPO / "crds").glob("*.yaml"))


def generated_crd_names() -> set[str]:
    names = set()
    for f in CRD_SOURCES:
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                names.add(doc["metadata"]["name"])
    return names


def test_the_generated_crds_exist():
    assert generated_crd_names() >= {
        "privacybudgets.ppml.dev",
        "privatetrainingjobs.ppml.dev",
        "federatedjobs.ppml.dev",
    }


def test_the_chart_copies_have_not_drifted_from_crds():
    p = subprocess.run(
        ["bash", str(REPO / "scripts" / "sync-chart-crds.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr


def test_the_chart_renders_the_generated_crds_with_the_keep_policy(default):
    crds = default.of_kind("CustomResourceDefinition")
    assert {c["metadata"]["name"] for c in crds} == generated_crd_names()
    for c in crds:
        annotations = c["metadata"]["annotations"]
        assert annotations["helm.sh/resource-policy"] == "keep"
        assert annotations["argocd.argoproj.io/sync-options"] == "Delete=false,Prune=false"


def test_rendered_crds_equal_the_sources_apart_from_the_annotation(default):
    sources = {}
    for f in CRD_SOURCES:
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                sources[doc["metadata"]["name"]] = doc
    for c in default.of_kind("CustomResourceDefinition"):
        c["metadata"]["annotations"].pop("helm.sh/resource-policy")
        c["metadata"]["annotations"].pop("argocd.argoproj.io/sync-options")
        if not c["metadata"]["annotations"]:
            del c["metadata"]["annotations"]
        assert c == sources[c["metadata"]["name"]]


def test_crds_can_be_left_out_or_not_kept(render):
    assert not render("crds.enabled=false").of_kind("CustomResourceDefinition")
    for c in render("crds.keep=false").of_kind("CustomResourceDefinition"):
        annotations = c["metadata"].get("annotations", {})
        assert "helm.sh/resource-policy" not in annotations
        assert "argocd.argoproj.io/sync-options" not in annotations
