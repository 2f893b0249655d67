"""The Argo CD health checks shipped in values.yaml, run by the Lua interpreter Argo CD embeds.

A tiny Go program (argocd_lua/) runs each script with github.com/yuin/gopher-lua, the library
and version Argo CD uses, with the object as the global ``obj``, as Argo CD does.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from .conftest import CHART, REPO

HERE = REPO / "tests" / "unit" / "chart" / "argocd_lua"
CHECKS = yaml.safe_load((CHART / "values.yaml").read_text())["argocdHealthChecks"]
KEY = "resource.customizations.health.ppml.dev_{}"


@pytest.fixture(scope="session")
def lua(tmp_path_factory):
    go = shutil.which("go") or "/usr/local/go/bin/go"
    out = tmp_path_factory.mktemp("argocd-lua") / "argocd-lua"
    p = subprocess.run(
        [go, "build", "-o", str(out), "."], cwd=HERE, capture_output=True, text=True, timeout=600
    )
    assert p.returncode == 0, p.stderr
    scripts = tmp_path_factory.mktemp("scripts")

    def run(kind: str, obj: dict) -> tuple[str, str]:
        script = scripts / f"{kind}.lua"
        script.write_text(CHECKS[KEY.format(kind)])
        r = subprocess.run(
            [str(out), str(script)], input=json.dumps(obj), capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        answer = json.loads(r.stdout)
        return answer["status"], answer["message"]

    return run


def cond(type_, status, reason, message=None):
    c = {"type": type_, "status": status, "reason": reason}
    if message:
        c["message"] = message
    return c


def obj(kind, conditions=None, generation=1, observed=1, **status):
    o = {
        "kind": kind,
        "metadata": {"name": "x", "generation": generation},
        "spec": {"epsilon": "3"},
    }
    if conditions is not None:
        o["status"] = {"conditions": conditions, "observedGeneration": observed, **status}
    return o


JOB_CASES = {
    "never observed": (None, 1, "Progressing"),
    "observed an older generation": ([cond("Complete", "True", "Succeeded")], 0, "Progressing"),
    "waiting for budget": (
        [cond("Admitted", "False", "BudgetExhausted", "needs 1.0")],
        1,
        "Progressing",
    ),
    "running": (
        [cond("Admitted", "True", "Reserved"), cond("Running", "True", "PodsRunning")],
        1,
        "Progressing",
    ),
    "complete": (
        [cond("Running", "False", "Succeeded"), cond("Complete", "True", "Succeeded")],
        1,
        "Healthy",
    ),
    "failed": ([cond("Failed", "True", "PodFailed", "trainer exited 1")], 1, "Degraded"),
    "budget can never pay": ([cond("Failed", "True", "BudgetNeverFits")], 1, "Degraded"),
    "suspended": (
        [cond("Admitted", "True", "Reserved"), cond("Suspended", "True", "SuspendedByUser")],
        1,
        "Suspended",
    ),
}


@pytest.mark.parametrize("kind", ["PrivateTrainingJob", "FederatedJob"])
@pytest.mark.parametrize(
    ("conditions", "observed", "expected"), list(JOB_CASES.values()), ids=list(JOB_CASES)
)
def test_job_health(lua, kind, conditions, observed, expected):
    status, message = lua(kind, obj(kind, conditions, generation=1, observed=observed))
    assert status == expected
    assert message


BUDGET_CASES = {
    "never observed": (None, "Progressing"),
    "epsilon left": ([cond("Exhausted", "False", "BudgetAvailable")], "Healthy"),
    "all spent (working as intended)": ([cond("Exhausted", "True", "BudgetSpent")], "Healthy"),
    "epsilon lowered below what is spent": (
        [cond("Exhausted", "True", "EpsilonBelowSpent")],
        "Degraded",
    ),
}


@pytest.mark.parametrize(
    ("conditions", "expected"), list(BUDGET_CASES.values()), ids=list(BUDGET_CASES)
)
def test_budget_health(lua, conditions, expected):
    status, message = lua("PrivacyBudget", obj("PrivacyBudget", conditions, remainingEpsilon="1.2"))
    assert status == expected
    assert message


def test_the_gitops_example_ships_the_same_checks():
    example = yaml.safe_load((REPO / "examples" / "gitops" / "argocd-cm-health.yaml").read_text())
    assert example["configs"]["cm"] == CHECKS
