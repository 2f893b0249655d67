"""The one condition matcher: find a condition in a plan, a status or an object."""

from __future__ import annotations

from typing import Any

from ppml_operator.reconcile.plan import Plan

Obj = dict[str, Any]


def cond(source: Plan | Obj | None, type_: str) -> Obj | None:
    """Return the condition of that type from a plan's status, a status or a whole object."""
    status = source.status if isinstance(source, Plan) else source
    if status is not None and "conditions" not in status and "status" in status:
        status = status.get("status")  # a whole object
    for c in (status or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return None


def has(source: Plan | Obj | None, type_: str, status: str = "True",
        reason: str | None = None) -> bool:
    """Return whether the condition is there with that status (and reason, when given)."""
    found = cond(source, type_)
    return found is not None and found["status"] == status and (
        reason is None or found.get("reason") == reason)


condition = cond
"""The same matcher under the name the cluster-tier tests use."""


def is_true(source: Plan | Obj | None, type_: str) -> bool:
    """Return whether the condition of that type is there and True."""
    return has(source, type_)
