"""helm lint --strict: the chart is well-formed for every supported namespace mode."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from .conftest import CHART, KUBE

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))

MODES = {
    "watch every namespace": [],
    "watch listed namespaces": ["--set", "operator.watchNamespaces={team-a,team-b}"],
    "everything optional on": [
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "grafanaDashboard.enabled=true",
    ],
}


@pytest.mark.parametrize("args", list(MODES.values()), ids=list(MODES))
def test_helm_lint_strict(helm, args):
    p = subprocess.run(
        [helm, "lint", "--strict", "--kube-version", KUBE, str(CHART), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 chart(s) failed" in p.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_the_chart_testing_values_lint_and_render(helm, values):
    p = subprocess.run(
        [helm, "lint", "--strict", "--kube-version", KUBE, str(CHART), "-f", str(values)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_plain_helm_template_renders_without_flags(helm):
    """Issue 13: `helm template charts/ppml-operator | kubectl apply -f -` must work as is.

    A helm built with a bare `go build` assumed Kubernetes v1.20.0 offline and refused the
    chart's kubeVersion (>= 1.30); build-tools.sh now builds it as helm's releases are built.
    """
    p = subprocess.run(
        [helm, "template", str(CHART.relative_to(CHART.parents[1]))],
        cwd=CHART.parents[1],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(p.stdout) if d}
    assert {"CustomResourceDefinition", "Deployment", "ClusterRole"} <= kinds
