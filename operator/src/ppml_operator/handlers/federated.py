"""FederatedJob: observe → decide → act, behind one level-triggered entry point, and its kopf edges.

:func:`reconcile` is what create, update, resume, the timer and the delete handler call. It reads
the job, every budget it charges and its children fresh from the API server (never a Secret:
the operator may only create and delete them), generates all of the job's key material in one
pass while the job does not record its key Secret as created (random, so here and not in
``decide``), calls the pure :mod:`ppml_operator.reconcile.federated` and carries out the plan
with the same ``act`` as PrivateTrainingJob. A lost compare-and-swap on any budget re-observes
at once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from ppml_operator import k8s, metrics
from ppml_operator.api import GROUP
from ppml_operator.api import conditions as c
from ppml_operator.api.v1alpha1 import FederatedJob
from ppml_operator.handlers.act import EventSink, PlanAborted, act
from ppml_operator.handlers.config import Settings
from ppml_operator.reconcile import federated
from ppml_operator.reconcile.plan import Plan
from ppml_operator.reconcile.training import InvalidSpec, is_finished, was_admitted
from ppml_operator.render import federated as rf
from ppml_operator.render.common import LABEL_JOB_UID

Obj = dict[str, Any]
KIND = "FederatedJob"
PLURAL = "federatedjobs"
CHILD_KINDS = ("ServiceAccount", "ConfigMap", "NetworkPolicy", "Service", "Job")
"""The non-pod children observed by label. Never Secret: the operator may not read Secrets."""

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_prices: dict[tuple[str, int], federated.FederatedPrice | InvalidSpec] = {}


def _lock(uid: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(uid, threading.Lock())


def _price(job: Obj) -> federated.FederatedPrice | InvalidSpec:
    meta = job["metadata"]
    key = (meta["uid"], int(meta.get("generation") or 0))
    if key not in _prices:
        _prices[key] = federated.price(job)
    return _prices[key]


def _new_key_secret(job: Obj, now: datetime) -> Obj | None:
    """Generate the job's key Secret unless the job records it as created (or is over)."""
    if is_finished(job) or job["metadata"].get("deletionTimestamp"):
        return None
    if rf.key_secret_recorded(job):
        return None
    try:
        fj = FederatedJob.model_validate({k: v for k, v in job.items() if k != "status"})
    except ValidationError:
        return None  # the price reports the invalid spec
    return rf.generate_key_secret(job, fj, now)


def observe(
    client: k8s.Client, namespace: str, name: str, settings: Settings, now: datetime
) -> federated.FederatedObserved | None:
    """Read the federation, its budgets and its children; None when the job is gone."""
    job = client.get(KIND, namespace, name)
    if job is None:
        return None
    job.setdefault("kind", KIND)
    job.setdefault("apiVersion", f"{GROUP}/{k8s.VERSION}")
    meta = job["metadata"]
    price = _price(job)
    budgets: dict[str, Obj | None] = {}
    if not isinstance(price, InvalidSpec):
        for charge in price.charges:
            budget = client.get("PrivacyBudget", namespace, charge.budget)
            if budget is not None:
                budget.setdefault("kind", "PrivacyBudget")
            budgets[charge.budget] = budget
    children: list[Obj] = []
    pods: list[Obj] = []
    if was_admitted(job) or meta.get("deletionTimestamp") or not is_finished(job):
        selector = f"{LABEL_JOB_UID}={meta['uid']}"
        for kind in CHILD_KINDS:
            children.extend(client.list(kind, namespace, selector))
        pods = client.list("Pod", namespace, selector)
    return federated.FederatedObserved(
        job=job,
        budgets=budgets,
        price=price,
        children=children,
        pods=pods,
        new_key_secret=_new_key_secret(job, now),
        settings=settings.render,
    )


def _record(job: Obj, plan: Plan, *, deleting: bool) -> None:
    """Update the job metrics: admissions, refusals by reason, the job's main condition."""
    meta = job["metadata"]
    ns, uid = meta["namespace"], meta["uid"]
    if deleting:
        metrics.set_job_condition(KIND, ns, uid, None)
        return
    before = (job.get("status") or {}).get("conditions")
    after = (plan.status or job.get("status") or {}).get("conditions")
    if c.is_true(after, c.ADMITTED) and not c.is_true(before, c.ADMITTED):
        metrics.ADMISSIONS.labels(KIND, ns).inc()
        created = datetime.fromisoformat(str(meta["creationTimestamp"]).replace("Z", "+00:00"))
        metrics.ADMISSION_LATENCY.labels(KIND).observe(
            max((datetime.now(UTC) - created).total_seconds(), 0.0))
    refused, old = c.get_condition(after, c.ADMITTED), c.get_condition(before, c.ADMITTED)
    if refused and refused.get("status") == "False" and (
            old is None or old.get("reason") != refused.get("reason")):
        metrics.REFUSALS.labels(KIND, ns, str(refused.get("reason"))).inc()
    main = next((t for t in (c.COMPLETE, c.FAILED, c.RUNNING, c.ADMITTED)
                 if c.is_true(after, t)), "Waiting")
    metrics.set_job_condition(KIND, ns, uid, main)


def reconcile(
    client: k8s.Client,
    namespace: str,
    name: str,
    uid: str,
    settings: Settings,
    logger: logging.Logger,
    emit: EventSink | None = None,
    *,
    deleting: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Plan | None:
    """Reconcile one FederatedJob until a pass's plan is fully applied.

    Returns
    -------
    Plan or None
        The last plan applied, or None when the job no longer exists.

    Raises
    ------
    k8s.ConflictError
        When every attempt lost its compare-and-swap (the caller retries later).

    """
    with _lock(uid):
        last_error: Exception | None = None
        for attempt in range(settings.cas_attempts):
            observed = observe(client, namespace, name, settings, now())
            if observed is None or observed.job["metadata"]["uid"] != uid:
                return None
            if deleting:
                plan = federated.decide_deletion(observed, now())
            elif observed.job["metadata"].get("deletionTimestamp"):
                return None  # the delete handler settles it
            else:
                plan = federated.decide(observed, now())
            try:
                act(client, KIND, observed.job, plan, logger, emit)
            except (k8s.ConflictError, PlanAborted) as err:
                last_error = err
                time.sleep(random.uniform(0, 0.05 * (attempt + 1)))
                continue
            _record(observed.job, plan, deleting=deleting)
            return plan
        assert last_error is not None
        raise last_error


# --- kopf edges --------------------------------------------------------------------------------


def _reconcile(kwargs: dict[str, Any], *, deleting: bool = False) -> None:
    from ppml_operator.handlers import register

    body: kopf.Body = kwargs["body"]
    meta = body.get("metadata") or {}
    namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])

    def emit(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)

    try:
        plan = reconcile(register.client(), namespace, name, uid, register.SETTINGS,
                         kwargs["logger"], emit, deleting=deleting)
    except (k8s.KubernetesError, OSError) as err:
        metrics.RECONCILE_ERRORS.labels(KIND, type(err).__name__).inc()
        raise kopf.TemporaryError(f"Reconcile of {namespace}/{name} failed: {err}",
                                  delay=1) from err
    if deleting and plan is not None and not plan.done:
        raise kopf.TemporaryError(f"Settling the charges of {namespace}/{name}", delay=1)


@kopf.on.create(GROUP, k8s.VERSION, PLURAL)
@kopf.on.update(GROUP, k8s.VERSION, PLURAL)
@kopf.on.resume(GROUP, k8s.VERSION, PLURAL)
def fedjob_changed(**kwargs: Any) -> None:
    """Reconcile a FederatedJob that was created, changed, or found at start-up."""
    _reconcile(kwargs)


@kopf.timer(GROUP, k8s.VERSION, PLURAL, interval=Settings.from_env().interval, sharp=False)
def fedjob_timer(**kwargs: Any) -> None:
    """Reconcile a FederatedJob periodically (pods and budgets are polled, not watched)."""
    body: kopf.Body = kwargs["body"]
    if is_finished(dict(body)) and (body.get("spec") or {}).get("ttlSecondsAfterFinished") is None:
        return
    _reconcile(kwargs)


@kopf.on.delete(GROUP, k8s.VERSION, PLURAL)
def fedjob_deleted(**kwargs: Any) -> None:
    """Settle a deleted federation's charges (release or commit) before its finalizer goes."""
    _reconcile(kwargs, deleting=True)
