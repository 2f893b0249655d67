"""`ppml status`: budgets as bars and jobs with progress, rendered from wire-form objects."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ppml_operator.cli.status import (
    REMAINING_CHAR,
    RESERVED_CHAR,
    SPENT_CHAR,
    JobView,
    bar,
    job_state,
    render_status,
)


def budget(name, epsilon, spent=None, reserved=None, remaining=None, exhausted=False):
    status = {}
    if spent is not None:
        status.update(spentEpsilon=spent, reservedEpsilon=reserved, remainingEpsilon=remaining)
    if exhausted:
        status["conditions"] = [{"type": "Exhausted", "status": "True", "reason": "BudgetSpent"}]
    return {
        "kind": "PrivacyBudget",
        "metadata": {"name": name, "namespace": "clinic"},
        "spec": {"epsilon": epsilon, "delta": "1e-5"},
        "status": status,
    }


def job(name, conditions=(), progress=None, kind="PrivateTrainingJob", budget_name="records"):
    status = {"conditions": [dict(type=t, status=s, reason=r) for t, s, r in conditions]}
    if progress is not None:
        status["progress"] = progress
    return {
        "kind": kind,
        "metadata": {"name": name, "namespace": "clinic"},
        "spec": {"budgetRef": {"name": budget_name}},
        "status": status,
    }


BARS = {
    "empty budget": ([(Decimal(0), SPENT_CHAR)], Decimal(4), 8, REMAINING_CHAR * 8),
    "half spent": ([(Decimal(2), SPENT_CHAR)], Decimal(4), 8, SPENT_CHAR * 4 + REMAINING_CHAR * 4),
    "spent and reserved": (
        [(Decimal(1), SPENT_CHAR), (Decimal(1), RESERVED_CHAR)],
        Decimal(4),
        8,
        SPENT_CHAR * 2 + RESERVED_CHAR * 2 + REMAINING_CHAR * 4,
    ),
    "a sliver still shows": (
        [(Decimal("0.001"), SPENT_CHAR)],
        Decimal(4),
        8,
        SPENT_CHAR + REMAINING_CHAR * 7,
    ),
    "overspent never overflows": (
        [(Decimal(9), SPENT_CHAR), (Decimal(1), RESERVED_CHAR)],
        Decimal(4),
        8,
        SPENT_CHAR * 8,
    ),
}


@pytest.mark.parametrize(
    ("parts", "total", "width", "expected"), list(BARS.values()), ids=list(BARS)
)
def test_bars(parts, total, width, expected):
    assert bar(parts, total, width) == expected


STATES = {
    "no status yet": ((), ("Pending", "")),
    "waiting for budget": (
        (("Admitted", "False", "BudgetExhausted"),),
        ("Waiting", "BudgetExhausted"),
    ),
    "admitted, pods starting": (
        (("Admitted", "True", "Reserved"), ("Running", "False", "Pending")),
        ("Admitted", "Reserved"),
    ),
    "running": (
        (("Admitted", "True", "Reserved"), ("Running", "True", "PodsRunning")),
        ("Running", ""),
    ),
    "complete": (
        (("Admitted", "True", "Reserved"), ("Complete", "True", "Succeeded")),
        ("Complete", "Succeeded"),
    ),
    "failed wins over running": (
        (("Running", "True", "PodsRunning"), ("Failed", "True", "PodFailed")),
        ("Failed", "PodFailed"),
    ),
    "suspended": (
        (("Admitted", "True", "Reserved"), ("Suspended", "True", "SuspendedByUser")),
        ("Suspended", "SuspendedByUser"),
    ),
}


@pytest.mark.parametrize(("conditions", "expected"), list(STATES.values()), ids=list(STATES))
def test_job_state_reads_the_conditions(conditions, expected):
    assert job_state(job("j", conditions)) == expected


def test_progress_of_a_training_job_and_of_a_federation():
    t = JobView.of(job("t", [("Running", "True", "PodsRunning")], {"step": 30, "totalSteps": 120}))
    assert t.fraction == pytest.approx(0.25) and t.progress == "step 30/120"
    fed = job("f", [("Running", "True", "PodsRunning")], kind="FederatedJob")
    fed["spec"]["rounds"] = 5
    fed["status"]["federation"] = {"roundsCompleted": 2}
    f = JobView.of(fed)
    assert f.fraction == pytest.approx(0.4) and f.progress == "round 2/5"
    done = JobView.of(job("d", [("Complete", "True", "Succeeded")]))
    assert done.fraction == 1.0


def test_epsilon_charged_measured_so_far_and_accuracy():
    running = job("r", [("Running", "True", "PodsRunning")], {"step": 10, "totalSteps": 40})
    running["status"]["privacy"] = {"epsilon": "1.2"}
    running["status"]["progress"]["epsilonSoFar"] = "0.4567"
    assert JobView.of(running).epsilon == "ε 0.457 so far of 1.2"
    done = job("d", [("Complete", "True", "Succeeded")], {"step": 40, "totalSteps": 40})
    done["status"]["privacy"] = {"epsilon": "1.2", "measuredEpsilon": "1.19"}
    done["status"]["metrics"] = {"testAccuracy": "0.91"}
    assert JobView.of(done).epsilon == "ε 1.2  accuracy 0.91"


def test_federated_jobs_list_every_silo_budget_once():
    fj = job("fed", kind="FederatedJob", budget_name="shared")
    fj["spec"]["clients"] = [{"budgetRef": {"name": "silo-a"}}, {"budgetRef": {"name": "shared"}}]
    assert JobView.of(fj).budgets == ("shared", "silo-a")


def test_the_whole_screen():
    text = render_status(
        [
            budget("records", "4", spent="1", reserved="1", remaining="2"),
            budget("scans", "1", spent="1", reserved="0", remaining="0", exhausted=True),
            budget("fresh", "2"),
        ],
        [
            job("digits", [("Running", "True", "PodsRunning")], {"step": 50, "totalSteps": 100}),
            job("waits", [("Admitted", "False", "BudgetExhausted")], budget_name="scans"),
        ],
        width=110,
    )
    lines = text.splitlines()
    assert lines[0].startswith("BUDGETS")
    fresh, records, scans = (i for i, line in enumerate(lines) if line.startswith("clinic/"))
    assert "EXHAUSTED" in lines[scans]
    assert (
        lines[records + 1]
        .strip()
        .startswith("[" + SPENT_CHAR * 15 + RESERVED_CHAR * 15 + REMAINING_CHAR * 30 + "]")
    )
    assert lines[scans + 1].strip().startswith("[" + SPENT_CHAR * 60 + "]")
    assert lines[fresh + 1].strip().startswith("[" + REMAINING_CHAR * 60 + "]")
    digits = next(line for line in lines if "clinic/digits" in line)
    assert "Running" in digits and " 50%" in digits and "step 50/100" in digits
    waits = next(line for line in lines if "clinic/waits" in line)
    assert "Waiting (BudgetExhausted)" in waits and "scans" in waits


def test_nothing_to_show():
    assert "(none)" in render_status([], [])


class FakeApiError(Exception):
    def __init__(self, status, reason=""):
        super().__init__(reason)
        self.status = status
        self.reason = reason


ERRORS = {
    "forbidden in one namespace": (FakeApiError(403), "clinic", "ppml-viewer role there"),
    "forbidden cluster-wide": (FakeApiError(403), None, "name one namespace with -n"),
    "no CRDs": (FakeApiError(404), "clinic", "CRDs are not installed"),
    "unreachable": (ConnectionRefusedError("refused"), "clinic", "could not read namespace clinic"),
}


@pytest.mark.parametrize(("err", "namespace", "says"), list(ERRORS.values()), ids=list(ERRORS))
def test_api_errors_become_one_sentence_that_says_what_to_do(err, namespace, says):
    from ppml_operator.cli.status import api_error_message

    assert says in api_error_message(err, namespace)
