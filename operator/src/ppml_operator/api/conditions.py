"""Condition types, reasons and pure helpers for ``status.conditions``.

Conditions are the source of truth of an object's state (no ``phase``): a list-map keyed by
``type``, each entry ``{type, status, reason, message, observedGeneration, lastTransitionTime}``
as in ``metav1.Condition``. The helpers work on the wire form (a list of dicts, as kopf hands
status over) and take the clock as an argument, so ``decide`` stays pure and tests use a fixed
clock.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableSequence
from datetime import UTC, datetime
from typing import Any, Final

# Condition types -------------------------------------------------------------------------------

ADMITTED: Final = "Admitted"
"""The job's cost is reserved on every budget it charges; its pods may run."""
RUNNING: Final = "Running"
"""At least one pod of the job is running."""
COMPLETE: Final = "Complete"
"""The job finished successfully and its charge is committed (terminal)."""
FAILED: Final = "Failed"
"""The job failed for good (terminal); the reason says why and what to do."""
SUSPENDED: Final = "Suspended"
"""spec.suspend is true: the job's pods are stopped, its reservation kept."""
EXHAUSTED: Final = "Exhausted"
"""On a PrivacyBudget: nothing more fits (remaining epsilon is zero or below every waiting job)."""
PRIVACY_VERIFIED: Final = "PrivacyVerified"
"""The runtime's own accountant measured no more epsilon than was charged."""

TYPES: Final = (ADMITTED, RUNNING, COMPLETE, FAILED, SUSPENDED, EXHAUSTED, PRIVACY_VERIFIED)
"""Every condition type the operator writes."""

# Reasons ---------------------------------------------------------------------------------------

RESERVED: Final = "Reserved"
"""Admitted=True: the cost is reserved on every budget."""
BUDGET_EXHAUSTED: Final = "BudgetExhausted"
"""Admitted=False: a budget cannot pay now; the job waits for reservations to be released."""
BUDGET_NOT_FOUND: Final = "BudgetNotFound"
"""Admitted=False: spec.budgetRef names a PrivacyBudget that does not exist (yet)."""
BUDGET_NEVER_FITS: Final = "BudgetNeverFits"
"""Failed=True: the job costs more than the budget's total epsilon; it can never run."""
INVALID_SPEC: Final = "InvalidSpec"
"""Failed=True: the spec passed the schema but the operator cannot honour it (field named)."""
PENDING: Final = "Pending"
"""Running=False: admitted, pods not running yet."""
PODS_RUNNING: Final = "PodsRunning"
"""Running=True: the job's pods are running."""
SUCCEEDED: Final = "Succeeded"
"""Complete=True: every worker exited 0; the charge is committed."""
POD_FAILED: Final = "PodFailed"
"""Failed=True: a pod failed and no retries are left (its message quotes the pod)."""
DEADLINE_EXCEEDED: Final = "DeadlineExceeded"
"""Failed=True: the job ran longer than spec.activeDeadlineSeconds."""
BACKOFF_LIMIT_EXCEEDED: Final = "BackoffLimitExceeded"
"""Failed=True: more attempts failed than spec.backoffLimit allows."""
SUSPENDED_BY_USER: Final = "SuspendedByUser"
"""Suspended=True: spec.suspend is true."""
RESUMED: Final = "Resumed"
"""Suspended=False: spec.suspend was set back to false."""
RESUME_NOT_PAID: Final = "ResumeNotPaid"
"""Suspended=True: the job was suspended after its trainer started; resuming is refused."""
DELETED: Final = "Deleted"
"""The job was deleted; its charge was settled (released or committed)."""
DATASET_DELETED: Final = "DatasetDeleted"
"""Failed reason: the PrivateDataset of an admitted job was deleted while the job ran."""
DELIVERING_MODEL: Final = "DeliveringModel"
"""Running=False reason: the trainer finished; the model is on its way to the job's claim."""
DELIVERY_FAILED: Final = "DeliveryFailed"
"""Failed reason: the model could not be delivered (the charge is committed all the same)."""
MEASURED_WITHIN_CHARGE: Final = "MeasuredWithinCharge"
"""PrivacyVerified=True: the runtime's epsilon is at most the charged epsilon."""
MEASURED_EXCEEDS_CHARGE: Final = "MeasuredEpsilonExceedsCharge"
"""PrivacyVerified=False: the runtime's epsilon exceeds the charge (a Warning event too)."""
BUDGET_AVAILABLE: Final = "BudgetAvailable"
"""Exhausted=False: the budget has epsilon left."""
BUDGET_SPENT: Final = "BudgetSpent"
"""Exhausted=True: the budget's epsilon is spent or reserved."""
EPSILON_BELOW_SPENT: Final = "EpsilonBelowSpent"
"""Exhausted=True: spec.epsilon was lowered below what is already spent and reserved."""

MESSAGE_LIMIT: Final = 1024
"""Longest condition message written; longer ones are cut and end with an ellipsis."""

_STATUSES = ("True", "False", "Unknown")


def format_time(now: datetime) -> str:
    """Return ``now`` as an RFC 3339 UTC timestamp with second precision (``...Z``)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def truncate(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """Return ``message`` cut to at most ``limit`` characters, marked with an ellipsis."""
    if len(message) <= limit:
        return message
    return message[: limit - 1] + "…"


def get_condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    """Return the condition of type ``type_``, or None when absent."""
    for condition in conditions or []:
        if condition.get("type") == type_:
            return condition
    return None


def is_true(conditions: list[dict[str, Any]] | None, type_: str) -> bool:
    """Return whether the condition of type ``type_`` is present with status True."""
    condition = get_condition(conditions, type_)
    return condition is not None and condition.get("status") == "True"


def set_condition(
    conditions: MutableSequence[dict[str, Any]],
    new: Mapping[str, Any],
    *,
    now: datetime,
    generation: int | None,
) -> bool:
    """Set a condition in place; return whether anything changed.

    Parameters
    ----------
    conditions
        The ``status.conditions`` list, modified in place.
    new
        The condition's ``type``, ``status`` (``"True"``, ``"False"``, ``"Unknown"`` or a bool),
        ``reason`` and ``message``.
    now
        The clock: becomes ``lastTransitionTime`` when the status flips or the type is new.
    generation
        The ``metadata.generation`` the condition was computed from (``observedGeneration``).

    Returns
    -------
    bool
        True when the list changed (status, reason, message or observedGeneration).

    """
    status = new["status"]
    if isinstance(status, bool):
        status = "True" if status else "False"
    if status not in _STATUSES:
        raise ValueError(f"condition status must be one of {_STATUSES}, got {status!r}")
    entry: dict[str, Any] = {
        "type": new["type"],
        "status": status,
        "reason": new["reason"],
        "message": truncate(str(new.get("message", ""))),
    }
    if generation is not None:
        entry["observedGeneration"] = generation
    for index, old in enumerate(conditions):
        if old.get("type") != entry["type"]:
            continue
        flipped = old.get("status") != status
        entry["lastTransitionTime"] = (
            format_time(now)
            if flipped or "lastTransitionTime" not in old
            else old["lastTransitionTime"]
        )
        if old == entry:
            return False
        conditions[index] = entry
        return True
    entry["lastTransitionTime"] = format_time(now)
    conditions.append(entry)
    return True


def remove_condition(conditions: MutableSequence[dict[str, Any]], type_: str) -> bool:
    """Remove the condition of type ``type_`` in place; return whether it was present."""
    for index, condition in enumerate(conditions):
        if condition.get("type") == type_:
            del conditions[index]
            return True
    return False
