"""``decide`` for PrivacyBudget: composed totals, the Exhausted condition, observedGeneration.

The budget's status is the ledger, written only by compare-and-swap; this module computes the
totals and conditions that go with a ledger (from its entries, never from a cache), so a budget
whose spec changed (a raised or lowered epsilon) shows the right remaining epsilon.
"""

from __future__ import annotations

import copy
from datetime import datetime
from decimal import Decimal
from typing import Any

from ppml_operator.api import conditions as c
from ppml_operator.privacy.decimals import format_cost, format_remaining
from ppml_operator.reconcile import ledger

Obj = dict[str, Any]


def desired_status(budget: Obj, now: datetime) -> Obj:
    """Return the budget's status with totals, conditions and observedGeneration refreshed.

    Parameters
    ----------
    budget
        The PrivacyBudget as read.
    now
        The clock (for condition transition times).

    Returns
    -------
    dict
        The new status (the ledger entries unchanged).

    """
    status = copy.deepcopy(budget.get("status") or {})
    totals = ledger.totals(budget, status)
    status.update(totals.status_fields())
    gen = (budget.get("metadata") or {}).get("generation")
    conds: list[Obj] = status.setdefault("conditions", [])
    used = totals.spent + totals.reserved
    delta = (budget.get("spec") or {}).get("delta")
    delta_left = ledger.basic_delta_left(budget, status)
    if used > totals.budget:
        c.set_condition(conds, {
            "type": c.EXHAUSTED, "status": True, "reason": c.EPSILON_BELOW_SPENT,
            "message": f"spec.epsilon {totals.budget} is below the {format_cost(used)} already "
            "spent and reserved; no job is admitted until it is raised",
        }, now=now, generation=gen)
    elif totals.remaining <= Decimal(0):
        c.set_condition(conds, {
            "type": c.EXHAUSTED, "status": True, "reason": c.BUDGET_SPENT,
            "message": f"epsilon {totals.budget} at delta {delta} is spent or reserved",
        }, now=now, generation=gen)
    elif delta_left is not None and delta_left <= Decimal(0):
        c.set_condition(conds, {
            "type": c.EXHAUSTED, "status": True, "reason": c.BUDGET_SPENT,
            "message": f"delta {delta} is spent or reserved under Basic composition "
            "(the deltas of its charges add up)",
        }, now=now, generation=gen)
    else:
        c.set_condition(conds, {
            "type": c.EXHAUSTED, "status": False, "reason": c.BUDGET_AVAILABLE,
            "message": f"epsilon {format_remaining(totals.remaining)} of {totals.budget} left "
            f"at delta {delta}",
        }, now=now, generation=gen)
    status["observedGeneration"] = gen
    return status
