"""PrivacyBudget: refresh totals and conditions with a compare-and-swap (never a merge patch)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from ppml_operator import k8s, metrics
from ppml_operator.handlers.act import write_budget
from ppml_operator.reconcile.budget import desired_status
from ppml_operator.reconcile.plan import BudgetWrite


def reconcile(client: k8s.Client, namespace: str, name: str, logger: logging.Logger) -> None:
    """Recompute a budget's totals from its ledger and store them if they changed."""
    for _ in range(8):
        budget = client.get("PrivacyBudget", namespace, name)
        if budget is None:
            return
        budget.setdefault("kind", "PrivacyBudget")
        status = desired_status(budget, datetime.now(UTC))
        spec = budget.get("spec") or {}
        if status == (budget.get("status") or {}):
            metrics.set_budget(namespace, name, status, str(spec.get("epsilon")))
            return
        try:
            write_budget(client, BudgetWrite(budget, status, "totals"), logger)
        except k8s.ConflictError:
            continue
        return
    raise k8s.ConflictError(409, "Conflict", f"budget {namespace}/{name} kept changing")
