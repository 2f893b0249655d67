"""Budget totals and the Exhausted condition."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ppml_operator.privacy import DpSgdEvent
from ppml_operator.reconcile import ledger
from ppml_operator.reconcile.budget import desired_status

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def make_budget(epsilon: str, reserved_steps: int | None = None) -> dict:
    b = {"kind": "PrivacyBudget",
         "metadata": {"name": "clinic", "namespace": "ns", "generation": 3},
         "spec": {"epsilon": epsilon, "delta": "1e-5"}}
    if reserved_steps is not None:
        evs = ledger.canonical_events([DpSgdEvent(Decimal("1.1"), Decimal("0.04"), reserved_steps)])
        req = ledger.ChargeRequest("u", "PrivateTrainingJob", "j", "ns", evs, "1")
        out = ledger.reserve({**b, "spec": {**b["spec"], "epsilon": "1000"}}, req, now="t")
        b["status"] = out.status
    return b


@pytest.mark.parametrize(("situation", "epsilon", "steps", "exhausted", "reason"), [
    ("an empty budget", "3", None, "False", "BudgetAvailable"),
    ("a budget with room left", "30", 25, "False", "BudgetAvailable"),
    ("epsilon lowered below what is reserved", "0.5", 25, "True", "EpsilonBelowSpent"),
])
def test_the_exhausted_condition_says_whether_anything_is_left(
    situation: str, epsilon: str, steps: int | None, exhausted: str, reason: str
) -> None:
    status = desired_status(make_budget(epsilon, steps), NOW)
    [cond] = status["conditions"]
    assert cond["type"] == "Exhausted" and cond["status"] == exhausted
    assert cond["reason"] == reason and cond["observedGeneration"] == 3
    assert status["observedGeneration"] == 3
    assert Decimal(status["remainingEpsilon"]) >= 0


def test_totals_are_recomputed_when_spec_epsilon_changes() -> None:
    low = desired_status(make_budget("3", 25), NOW)
    high = desired_status(make_budget("30", 25), NOW)
    assert low["reservedEpsilon"] == high["reservedEpsilon"]
    gained = Decimal(high["remainingEpsilon"]) - Decimal(low["remainingEpsilon"])
    assert abs(gained - 27) < Decimal("0.001")


@pytest.mark.parametrize(("situation", "job_delta", "exhausted"), [
    ("a Basic charge at the budget's whole delta leaves nothing", "0.00001", "True"),
    ("a Basic charge at half the delta leaves room", "0.000005", "False"),
])
def test_a_basic_budget_whose_delta_is_spent_is_exhausted(
    situation: str, job_delta: str, exhausted: str
) -> None:
    b = {"kind": "PrivacyBudget",
         "metadata": {"name": "clinic", "namespace": "ns", "generation": 1},
         "spec": {"epsilon": "30", "delta": "1e-5", "composition": "Basic"}}
    evs = ledger.canonical_events([DpSgdEvent(Decimal("1.1"), Decimal("0.04"), 25)])
    req = ledger.ChargeRequest("u", "PrivateTrainingJob", "j", "ns", evs, "1", delta=job_delta)
    b["status"] = ledger.reserve(b, req, now="t").status
    [cond] = desired_status(b, NOW)["conditions"]
    assert cond["status"] == exhausted
    if exhausted == "True":
        assert cond["reason"] == "BudgetSpent" and "under Basic composition" in cond["message"]
