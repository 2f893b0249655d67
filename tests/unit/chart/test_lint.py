"""helm lint --strict: the chart is well-formed for every supported namespace mode."""

from __future__ import annotations

import subprocess

import pytest

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
