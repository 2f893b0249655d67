"""PrivateTrainingJob: observe → decide → act, behind one level-triggered entry point.

:func:`reconcile` is what create, update, resume and the timer call; :func:`finalize` is the
delete handler. Both read the job, its budget and its children fresh from the API server (the
watch's copy may lag our own last write), call the pure ``decide``, and carry out the plan. A
lost compare-and-swap re-observes at once; other failures are retried by kopf.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from ppml_operator import k8s, metrics
from ppml_operator.api import GROUP
from ppml_operator.api import conditions as c
from ppml_operator.handlers.act import EventSink, PlanAborted, act
from ppml_operator.handlers.config import Settings
from ppml_operator.handlers.ledger_writer import write_ledger
from ppml_operator.reconcile import ledger, training
from ppml_operator.reconcile.plan import Plan
from ppml_operator.render.common import LABEL_JOB_UID
from ppml_operator.render.trainer import names
from ppml_runtime import contract as rc

Obj = dict[str, Any]
KIND = "PrivateTrainingJob"
CHILD_KINDS = ("ServiceAccount", "ConfigMap", "NetworkPolicy", "Service", "Job")

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_prices: dict[tuple[str, int], training.Price | training.InvalidSpec] = {}


def _lock(uid: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(uid, threading.Lock())


def _price(job: Obj) -> training.Price | training.InvalidSpec:
    meta = job["metadata"]
    key = (meta["uid"], int(meta.get("generation") or 0))
    if key not in _prices:
        _prices[key] = training.price(job)
    return _prices[key]


def observe(
    client: k8s.Client,
    namespace: str,
    name: str,
    settings: Settings,
    waiting: Iterable[tuple[str, str, str]] = (),
    *,
    with_children: bool | None = None,
) -> training.TrainingObserved | None:
    """Read the job, its budget and its children; None when the job is gone.

    Parameters
    ----------
    waiting
        ``(creationTimestamp, name, uid)`` of jobs waiting on budgets in this namespace (from
        the kopf index); those older than this one and holding no charge are ahead of it.
    with_children
        Whether to list the children (default: only when the job was ever admitted or is being
        deleted; a job that never was has none).

    """
    job = client.get(KIND, namespace, name)
    if job is None:
        return None
    job.setdefault("kind", KIND)
    job.setdefault("apiVersion", f"{GROUP}/{k8s.VERSION}")
    meta = job["metadata"]
    budget_name = str(((job.get("spec") or {}).get("budgetRef") or {}).get("name", ""))
    if with_children is None:
        with_children = training.was_admitted(job) or bool(meta.get("deletionTimestamp"))
    children: dict[str, Obj] = {}
    pods: list[Obj] = []
    all_children = True
    if with_children:
        selector = f"{LABEL_JOB_UID}={meta['uid']}"
        trainer = client.get("Job", namespace, names(name)["job"])
        if trainer is not None and (trainer["metadata"].get("labels") or {}).get(
            LABEL_JOB_UID
        ) == meta["uid"]:
            children["Job"] = trainer
        pods = client.list("Pod", namespace, selector)
        # Children are created in order, the trainer Job last: once it exists, so do the others,
        # and a routine pass reads only the Job and its pods.
        all_children = "Job" not in children
        if all_children:
            for kind in CHILD_KINDS:
                if kind == "Job":
                    continue
                for item in client.list(kind, namespace, selector):
                    children[kind] = item
    # The budget (a large object once many jobs charged it) is read when the pass may touch
    # the ledger: before admission, when the trainer ended or vanished, and on deletion. A
    # routine pass over a running job does not need it.
    trainer = children.get("Job")
    ended = trainer is not None and any(
        cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True"
        for cond in (trainer.get("status") or {}).get("conditions") or []
    )
    need_budget = (
        not with_children or trainer is None or ended or bool(meta.get("deletionTimestamp"))
        or training.is_finished(job) or not training.was_admitted(job)
    )
    budget = None
    if need_budget and budget_name:
        budget = client.get("PrivacyBudget", namespace, budget_name)
        if budget is not None:
            budget.setdefault("kind", "PrivacyBudget")
    mine = (str(meta.get("creationTimestamp")), name)
    ahead = sorted(
        (ts, other) for ts, other, uid in waiting
        if (ts, other) < mine and uid != meta["uid"]
        and (budget is None or ledger.find_charge(budget, uid) is None)
    )
    return training.TrainingObserved(
        progress=_scrape_progress(pods),
        job=job,
        budget=budget,
        price=_price(job),
        children=children,
        pods=pods,
        waiting_ahead=tuple(n for _, n in ahead),
        settings=settings.render,
        keep_committed=settings.keep_committed,
        all_children=all_children,
        budget_read=need_budget,
    )


def _scrape_progress(pods: list[Obj]) -> rc.ProgressSnapshot | None:
    """Read the rank-0 trainer's live gauges from its metrics endpoint (best effort, 1 s)."""
    for pod in pods:
        annotations = pod["metadata"].get("annotations") or {}
        ip = (pod.get("status") or {}).get("podIP")
        if (pod.get("status") or {}).get("phase") != "Running" or not ip or annotations.get(
            "batch.kubernetes.io/job-completion-index", "0"
        ) != "0":
            continue
        try:
            with urllib.request.urlopen(f"http://{ip}:{rc.METRICS_PORT}/metrics", timeout=1) as r:
                return rc.parse_progress(r.read().decode("utf-8", "replace"))
        except (OSError, ValueError):
            return None
    return None


def _main_condition(job: Obj, plan: Plan) -> str:
    status = plan.status if plan.status is not None else (job.get("status") or {})
    conds = status.get("conditions")
    for type_ in (c.COMPLETE, c.FAILED, c.RUNNING, c.ADMITTED):
        if c.is_true(conds, type_):
            return type_
    return "Waiting"


def _record(job: Obj, plan: Plan, before: Obj) -> None:
    meta = job["metadata"]
    ns = meta["namespace"]
    after = plan.status
    if after is None:
        return
    was = c.is_true((before or {}).get("conditions"), c.ADMITTED)
    now_admitted = c.is_true(after.get("conditions"), c.ADMITTED)
    if now_admitted and not was:
        metrics.ADMISSIONS.labels(KIND, ns).inc()
        created = datetime.fromisoformat(str(meta["creationTimestamp"]).replace("Z", "+00:00"))
        metrics.ADMISSION_LATENCY.labels(KIND).observe(
            max((datetime.now(UTC) - created).total_seconds(), 0.0)
        )
    admitted = c.get_condition(after.get("conditions"), c.ADMITTED)
    old = c.get_condition((before or {}).get("conditions"), c.ADMITTED)
    if admitted and admitted.get("status") == "False" and (
        old is None or old.get("reason") != admitted.get("reason")
    ):
        metrics.REFUSALS.labels(KIND, ns, str(admitted.get("reason"))).inc()
    metrics.set_job_condition(KIND, ns, meta["uid"], _main_condition(job, plan))


def reconcile(
    client: k8s.Client,
    namespace: str,
    name: str,
    uid: str,
    settings: Settings,
    logger: logging.Logger,
    emit: EventSink | None = None,
    waiting: Callable[[], Iterable[tuple[str, str, str]]] = lambda: (),
    *,
    deleting: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Plan | None:
    """Reconcile one PrivateTrainingJob until a pass's plan is fully applied.

    Returns
    -------
    Plan or None
        The last plan applied (its ``requeue_after`` and ``done`` tell the caller what next),
        or None when the job no longer exists.

    Raises
    ------
    k8s.ConflictError
        When every attempt lost its compare-and-swap (the caller retries later).

    """
    with _lock(uid):
        last_error: Exception | None = None
        for attempt in range(settings.cas_attempts):
            observed = observe(client, namespace, name, settings, waiting())
            if observed is None or observed.job["metadata"]["uid"] != uid:
                return None
            if observed.job["metadata"].get("deletionTimestamp") and not deleting:
                return None  # the delete handler settles it
            decide = training.decide_deletion if deleting else training.decide
            plan = decide(observed, now())
            try:
                if plan.budget_writes and observed.budget is not None:
                    plan = write_ledger(client, observed, plan, decide, now, logger)
                act(client, KIND, observed.job, plan, logger, emit)
            except (k8s.ConflictError, PlanAborted) as err:
                last_error = err
                # Lost a race: back off a little (jittered, so racing writers spread out).
                time.sleep(random.uniform(0, 0.05 * (attempt + 1)))
                continue
            if not deleting:
                _record(observed.job, plan, observed.job.get("status") or {})
            else:
                metrics.set_job_condition(KIND, namespace, uid, None)
            return plan
        assert last_error is not None
        raise last_error


def job_child_names(job_name: str) -> dict[str, str]:
    """Return the names of the job's children (for tests and tools)."""
    return names(job_name)
