"""What ``decide`` returns and ``act`` carries out: the plan of one reconcile pass.

``act`` executes a plan strictly in this order and stops at the first failure, so the order is
the protocol (``docs/ledger.md``): budget writes (compare-and-swap), then the job's status, then
new children, then patches, then deletions; ledger writes flagged ``after_deletes`` run last and
only when every deletion succeeded. A pass that stops early is simply retried: every step is
idempotent and the next ``decide`` sees what was done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class BudgetWrite:
    """Compare-and-swap a budget's status.

    Attributes
    ----------
    budget
        The budget object as read, carrying its resourceVersion.
    status
        The new status to write.
    operation
        What it is, for logs, metrics and events: ``reserve``, ``commit``, ``release``,
        ``totals``.
    job_uid
        The job the write is for (empty for ``totals``).
    message
        A sentence describing the write.

    """

    budget: Obj
    status: Obj
    operation: str
    job_uid: str = ""
    message: str = ""


@dataclass(frozen=True)
class Deletion:
    """Delete one object, optionally only if it is unchanged since it was observed."""

    kind: str
    name: str
    propagation: str = "Background"
    uid: str | None = None
    resource_version: str | None = None
    namespace: str | None = None
    """Where the object is; None: the plan's ``child_namespace`` (or the job's)."""


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event on the reconciled object."""

    type: str
    reason: str
    message: str


@dataclass
class Plan:
    """The outcome of ``decide``: everything one pass should do, in order.

    Attributes
    ----------
    budget_writes
        Ledger compare-and-swaps, done first.
    status
        The job's whole desired status, or None to leave it as it is.
    create
        Children to create (skipped when they exist).
    patches
        ``(kind, name, merge patch)`` for existing children.
    deletions
        Objects to delete.
    late_budget_writes
        Ledger writes done only after every deletion succeeded (a release after the pods
        were deleted with preconditions).
    events
        Events to emit once the plan succeeded.
    delete_self
        Delete the reconciled object (ttlSecondsAfterFinished).
    done
        For deletion passes: True when the finalizer may go.
    child_namespace
        Where the children live when not in the job's namespace (a job on another
        namespace's PrivateDataset): patches and deletions go there.
    owner_events
        ``(kind, name, event)``: events on a child in the execution namespace, for the data
        owner's eyes only (exact metrics and raw error text never reach the job's events).

    """

    budget_writes: list[BudgetWrite] = field(default_factory=list)
    status: Obj | None = None
    create: list[Obj] = field(default_factory=list)
    patches: list[tuple[str, str, Obj]] = field(default_factory=list)
    deletions: list[Deletion] = field(default_factory=list)
    late_budget_writes: list[BudgetWrite] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    delete_self: bool = False
    done: bool = True
    child_namespace: str | None = None
    owner_events: list[tuple[str, str, Event]] = field(default_factory=list)
