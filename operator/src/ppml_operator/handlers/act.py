"""Carry out a :class:`~ppml_operator.reconcile.plan.Plan` through the one client module.

The order is the protocol (``docs/ledger.md``): budget compare-and-swaps first, then the job's
status, then children, patches, deletions, late budget writes, events. The first failure stops
the plan; the caller re-observes and decides again. A :class:`~ppml_operator.k8s.ConflictError`
on a budget write means somebody else wrote the budget first: nothing of ours was applied, and
a fresh pass decides with the new ledger.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ppml_operator import k8s, metrics
from ppml_operator.api.conditions import format_time
from ppml_operator.handlers.crash import crashpoint
from ppml_operator.reconcile import ledger
from ppml_operator.reconcile.plan import BudgetWrite, Event, Plan
from ppml_operator.render.common import LABEL_JOB_UID

Obj = dict[str, Any]
EventSink = Callable[[str, str, str], None]


WRITE_ONLY_KINDS = frozenset({"Secret"})
"""Kinds created with create-only semantics: 201 is done, 409 means an earlier pass created it.

The operator may not read these back (no get: RBAC grants Secrets create and delete only), and
what an earlier pass wrote is consistent by construction, so a 409 needs no look at it."""


class PlanAborted(Exception):
    """A step of the plan could not be done; re-observe and decide again."""


class ForeignChildError(PlanAborted):
    """An object of a child's name exists and belongs to another job: it is never adopted."""


def _owned_by_same_job(existing: Obj, child: Obj) -> bool:
    """Return whether an existing object carries the job-uid label the rendered child has."""
    want = (child["metadata"].get("labels") or {}).get(LABEL_JOB_UID)
    have = (existing.get("metadata", {}).get("labels") or {}).get(LABEL_JOB_UID)
    owners = {o.get("uid") for o in existing.get("metadata", {}).get("ownerReferences") or []}
    return want is not None and have == want and (not owners or want in owners)


def write_budget(client: k8s.Client, write: BudgetWrite, logger: logging.Logger) -> Obj:
    """Compare-and-swap one budget status; raise :class:`k8s.ConflictError` on a lost race."""
    body = copy.deepcopy(write.budget)
    body["status"] = write.status
    try:
        stored = client.replace_status(body)
    except k8s.ConflictError:
        metrics.LEDGER_WRITES.labels(write.operation, "conflict").inc()
        raise
    metrics.LEDGER_WRITES.labels(write.operation, "ok").inc()
    meta = write.budget["metadata"]
    logger.info("%s on PrivacyBudget %s/%s", write.message or "Updated ledger",
                meta["namespace"], meta["name"])
    crashpoint(f"after-{write.operation}")
    spec = write.budget.get("spec") or {}
    metrics.set_budget(meta["namespace"], meta["name"], write.status, str(spec.get("epsilon")))
    return stored


def _finishes(obj: Obj, status: Obj) -> bool:
    """Return whether a status write marks the job Complete or Failed for the first time."""

    def terminal(st: Obj) -> bool:
        return any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in st.get("conditions") or []
        )

    return terminal(status) and not terminal(obj.get("status") or {})


def _write_late(client: k8s.Client, write: BudgetWrite, logger: logging.Logger) -> None:
    """Write a release that follows deletions, re-reading the budget on every lost race.

    The deletions that justify it already happened (their preconditions held), so the release
    stays valid whatever else changed in the budget; re-deciding from scratch would instead find
    no pods and commit (doubt), losing the refund.
    """
    meta = write.budget["metadata"]
    for _ in range(20):
        try:
            write_budget(client, write, logger)
            return
        except k8s.ConflictError:
            fresh = client.get("PrivacyBudget", meta["namespace"], meta["name"])
            if fresh is None:
                return
            fresh.setdefault("kind", "PrivacyBudget")
            stamp = format_time(datetime.now(UTC))
            outcome = ledger.release(fresh, write.job_uid, now=stamp)
            if outcome.status is None:
                return  # released (or settled) by someone else meanwhile
            write = BudgetWrite(fresh, outcome.status, write.operation, write.job_uid,
                                outcome.message)
    raise k8s.ConflictError(409, "Conflict", f"budget {meta['name']} kept changing")


def _create(client: k8s.Client, child: Obj) -> bool:
    """Create a child unless it exists; return whether this call created it."""
    if child["kind"] in WRITE_ONLY_KINDS:
        try:
            client.create(child)
        except k8s.ConflictError:
            return False
        return True
    existing, created = client.ensure(child)
    if not created and not _owned_by_same_job(existing, child):
        meta = child["metadata"]
        raise ForeignChildError(
            f"{child['kind']} {meta['namespace']}/{meta['name']} exists but belongs to another "
            "owner (its ppml.dev/job-uid label or owner reference differs); it is not adopted: "
            "delete it, or rename the job")
    return created


def _owner_event(client: k8s.Client, namespace: str, kind: str, name: str, event: Event,
                 logger: logging.Logger) -> None:
    """Post an event on a child in the execution namespace (the data owner's eyes only).

    Best effort, like kopf's own events: a lost event never fails the pass.
    """
    stamp = format_time(datetime.now(UTC))
    api_version = {"Job": "batch/v1"}.get(kind, "v1")
    body: Obj = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": {"apiVersion": api_version, "kind": kind, "name": name,
                           "namespace": namespace},
        "type": event.type, "reason": event.reason, "message": event.message[:1024],
        "source": {"component": "ppml-operator"},
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }
    try:
        client.create(body)
    except k8s.KubernetesError as err:
        logger.warning("Could not post event %s on %s %s/%s: %s", event.reason, kind, namespace,
                       name, err)


def act(
    client: k8s.Client,
    kind: str,
    obj: Obj,
    plan: Plan,
    logger: logging.Logger,
    emit: EventSink | None = None,
) -> None:
    """Apply a plan to the cluster, in protocol order.

    Parameters
    ----------
    client
        The API client.
    kind
        The reconciled object's kind.
    obj
        The reconciled object as observed.
    plan
        What ``decide`` returned.
    logger
        The per-object logger.
    emit
        Posts an event ``(type, reason, message)`` on the object.

    Raises
    ------
    k8s.ConflictError
        A budget write lost its compare-and-swap (nothing of this step was applied).
    PlanAborted
        A deletion precondition failed: the world changed; decide again.

    """
    meta = obj["metadata"]
    ns, name = meta["namespace"], meta["name"]
    for write in plan.budget_writes:
        write_budget(client, write, logger)
    if plan.status is not None:
        client.patch_status(kind, ns, name, plan.status)
        crashpoint("after-status")
        if any(w.operation == "reserve" for w in plan.budget_writes) or plan.create:
            crashpoint("after-admit")
        if _finishes(obj, plan.status):
            crashpoint("after-complete")
    for child in plan.create:
        created = _create(client, child)
        if created:
            logger.info("Created %s %s/%s", child["kind"], child["metadata"].get("namespace", ns),
                        child["metadata"]["name"])
            crashpoint(f"after-create-{child['kind']}")
    child_ns = plan.child_namespace or ns
    for child_kind, child_name, patch in plan.patches:
        target_ns = ns if child_kind == kind else child_ns  # the job itself stays where it is
        client.patch(child_kind, target_ns, child_name, patch)
        logger.info("Patched %s %s/%s", child_kind, target_ns, child_name)
    for deletion in plan.deletions:
        target_ns = deletion.namespace or child_ns
        try:
            gone = client.delete(
                deletion.kind,
                target_ns,
                deletion.name,
                propagation=deletion.propagation,
                uid=deletion.uid,
                resource_version=deletion.resource_version,
            )
        except k8s.ConflictError as err:
            raise PlanAborted(f"{deletion.kind} {deletion.name} changed: {err.message}") from err
        if gone:
            logger.info("Deleted %s %s/%s (%s)", deletion.kind, target_ns, deletion.name,
                        deletion.propagation)
        if deletion.propagation == "Orphan":
            crashpoint("after-orphan-delete")
    for write in plan.late_budget_writes:
        _write_late(client, write, logger)
    if emit is not None:
        for event in plan.events:
            emit(event.type, event.reason, event.message)
    for child_kind, child_name, event in plan.owner_events:
        _owner_event(client, child_ns, child_kind, child_name, event, logger)
    if plan.delete_self:
        client.delete(kind, ns, name, uid=meta.get("uid"))
        logger.info("Deleted %s %s/%s", kind, ns, name)
