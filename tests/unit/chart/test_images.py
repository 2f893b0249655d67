"""The Dockerfiles, the CI workflow and the chart's defaults describe the same images."""

from __future__ import annotations

import re

import pytest
import yaml

from ppml_runtime import contract

from .conftest import CHART, REPO

IMAGES = REPO / "images"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
WORKFLOW = yaml.safe_load((REPO / ".github" / "workflows" / "images.yaml").read_text())

DOCKERFILES = {
    "operator": (IMAGES / "operator.Dockerfile", VALUES["image"]["repository"]),
    "runtime": (IMAGES / "runtime.Dockerfile", VALUES["runtimeImage"]["repository"]),
}


def instructions(path):
    """Return the Dockerfile's instructions as (KEYWORD, argument) with continuations joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            kw, _, arg = line.partition(" ")
            out.append((kw.upper(), arg.strip()))
    return out


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_bases_are_pinned_to_a_patch_release(name):
    path, _ = DOCKERFILES[name]
    args = dict(a.split("=", 1) for kw, a in instructions(path) if kw == "ARG" and "=" in a)
    bases = [a for kw, a in instructions(path) if kw == "FROM"]
    assert bases
    for base in bases:
        image = base.split()[0]
        if image.startswith("${"):
            image = args[image.strip("${}")]
        tag = image.rsplit(":", 1)[1]
        assert re.match(r"^\d+\.\d+\.\d+", tag), f"{name}: {image} is not pinned to x.y.z"


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_images_run_as_the_charts_non_root_user(name):
    path, _ = DOCKERFILES[name]
    users = [a for kw, a in instructions(path) if kw == "USER"]
    uid = VALUES["podSecurityContext"]["runAsUser"]
    gid = VALUES["podSecurityContext"]["runAsGroup"]
    assert users[-1] == f"{uid}:{gid}"


def test_operator_image_has_no_training_stack_and_exposes_the_charts_ports():
    path, _ = DOCKERFILES["operator"]
    text = path.read_text()
    assert '".[operator]"' in text and "[runtime]" not in text
    exposed = {int(p) for kw, a in instructions(path) if kw == "EXPOSE" for p in a.split()}
    assert exposed == {VALUES["probes"]["port"], VALUES["metrics"]["port"]}
    entry = [a for kw, a in instructions(path) if kw == "ENTRYPOINT"][-1]
    assert yaml.safe_load(entry) == ["python", "-m", "ppml_operator"]


def test_runtime_image_has_cuda_and_exposes_the_contract_ports():
    path, _ = DOCKERFILES["runtime"]
    assert "nvidia/cuda:" in path.read_text()
    assert '".[runtime]"' in path.read_text()
    exposed = {int(p) for kw, a in instructions(path) if kw == "EXPOSE" for p in a.split()}
    assert exposed == {
        contract.METRICS_PORT,
        contract.RENDEZVOUS_PORT,
        contract.SUPERLINK_PORT,
        contract.SUPERNODE_RUNTIME_PORT,
    }


def test_the_workflow_builds_what_the_chart_pulls():
    matrix = WORKFLOW["jobs"]["build"]["strategy"]["matrix"]["include"]
    built = {m["image"]: m["dockerfile"] for m in matrix}
    for path, repository in DOCKERFILES.values():
        name = repository.rsplit("/", 1)[1]
        assert built[name] == str(path.relative_to(REPO))
        assert repository.startswith("ghcr.io/")
    triggers = WORKFLOW[True] if True in WORKFLOW else WORKFLOW["on"]
    assert triggers["push"]["tags"] == ["v*.*.*"]
