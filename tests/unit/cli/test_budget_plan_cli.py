"""``ppml budget plan``: which jobs fit, in order, under the budget's composition."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from test_cost_cli import run, training_job, write

from ppml_operator.privacy import LedgerAccount, event_to_dict
from ppml_operator.reconcile.cost import job_charges


def budget(epsilon: str = "3", composition: str | None = None, **status: Any) -> dict[str, Any]:
    spec = {"epsilon": epsilon, "delta": "1e-5"}
    if composition:
        spec["composition"] = composition
    out: dict[str, Any] = {
        "apiVersion": "ppml.dev/v1alpha1",
        "kind": "PrivacyBudget",
        "metadata": {"name": "clinic"},
        "spec": spec,
    }
    if status:
        out["status"] = status
    return out


JOBS = [
    training_job("a"),
    training_job("b"),
    training_job("c", noise="0.8"),
    training_job("d", noise="2.0"),
    training_job("elsewhere", budget="other"),
]


def plan(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    budget_doc: dict[str, Any],
    jobs: list[dict[str, Any]] = JOBS,
) -> dict[str, Any]:
    code, out, err = run(
        capsys,
        "budget",
        "plan",
        "-f",
        write(tmp_path, "b.yaml", budget_doc),
        "-f",
        write(tmp_path, "j.yaml", *jobs),
        "--json",
    )
    assert code == 0, err
    return json.loads(out)


def test_jobs_fit_greedily_in_order_with_what_remains_after_each(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    result = plan(capsys, tmp_path, budget())
    jobs = result["jobs"]
    assert [j["name"] for j in jobs] == ["a", "b", "c", "d"]  # "elsewhere" charges another
    # Recompute with the library: the same greedy walk.
    ledger = LedgerAccount("RDP", Decimal("1e-5"))
    for job, doc in zip(jobs, JOBS, strict=False):
        (charge,) = job_charges(doc)
        fit = ledger.would_fit(list(charge.events), Decimal(3))
        assert job["fits"] is fit.fits
        if fit.fits:
            ledger.add(list(charge.events))
        assert Decimal(job["spentAfter"]) == ledger.spent_epsilon()
        assert Decimal(job["remainingAfter"]) <= Decimal(3) - ledger.spent_epsilon()
    assert [j["fits"] for j in jobs] == [True, False, False, True]
    assert result["fitCount"] == 2
    assert "above 3" in jobs[1]["reason"]


def test_composition_fits_more_jobs_than_basic(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    many = [training_job(f"j{i}", noise="2.0") for i in range(6)]
    rdp = plan(capsys, tmp_path, budget("3"), many)
    basic = plan(capsys, tmp_path, budget("3", "Basic"), many)
    assert rdp["budget"]["composition"] == "RDP"
    assert basic["budget"]["composition"] == "Basic"
    # Basic charges every job at its own delta (the budget's), so the deltas overflow at once.
    assert basic["fitCount"] == 1
    assert "delta would reach" in basic["jobs"][1]["reason"]
    assert rdp["fitCount"] > basic["fitCount"]


def test_live_charges_in_the_budget_status_are_spent_before_the_plan(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (charge,) = job_charges(training_job("old"))
    status = {
        "charges": [
            {
                "jobUID": "u1",
                "state": "Committed",
                "events": [event_to_dict(e) for e in charge.events],
            },
            {
                "jobUID": "u2",
                "state": "Released",
                "events": [event_to_dict(e) for e in charge.events],
            },
        ]
    }
    result = plan(capsys, tmp_path, budget(**status))
    assert Decimal(result["budget"]["spentBefore"]) == charge.epsilon
    assert [j["fits"] for j in result["jobs"]][:1] == [False]


def test_human_output_names_the_budget_and_counts_the_fits(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(
        capsys,
        "budget",
        "plan",
        "-f",
        write(tmp_path, "b.yaml", budget()),
        "-f",
        write(tmp_path, "j.yaml", *JOBS),
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("PrivacyBudget clinic: epsilon 3 at delta 0.00001")
    assert lines[1].split()[:4] == ["KIND", "NAME", "EPSILON", "FITS"]
    assert lines[-1].startswith("2 of 4 jobs fit")


def test_files_without_a_budget_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, "budget", "plan", "-f", write(tmp_path, "j.yaml", *JOBS))
    assert code == 2
    assert out == ""
    assert err.strip() == (
        "ppml budget plan: error: Argument -f: expected exactly one PrivacyBudget, found 0."
    )


def test_an_invalid_budget_names_the_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = budget()
    bad["spec"]["delta"] = "2"
    code, _, err = run(
        capsys,
        "budget",
        "plan",
        "-f",
        write(tmp_path, "b.yaml", bad),
        "-f",
        write(tmp_path, "j.yaml", *JOBS),
    )
    assert code == 2
    assert "delta" in err


def test_folded_charges_in_the_budget_status_are_spent_before_the_plan(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (charge,) = job_charges(training_job("old"))
    events = [event_to_dict(e) for e in charge.events]
    folded = {"count": 2, "events": [{**events[0], "steps": 2 * events[0]["steps"]}]}
    result = plan(capsys, tmp_path, budget("10", folded=folded))
    ledger = LedgerAccount("RDP", Decimal("1e-5"))
    ledger.add(list(charge.events))
    ledger.add(list(charge.events))
    assert Decimal(result["budget"]["spentBefore"]) == ledger.spent_epsilon()
