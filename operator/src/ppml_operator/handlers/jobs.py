"""The one observe → decide → act loop, for every kind of job.

:func:`reconcile` is what the watch-event handler, the timer and the delete handler of every
kind call (``ppml_operator.handlers.register`` registers them in a loop over the kinds). It
holds a per-UID lock, reads the job, the budgets its price charges and its children fresh from
the API server (the watch's copy may lag our own last write; never a Secret: the operator may
only create and delete them), calls the pure :mod:`ppml_operator.reconcile.lifecycle` with the
kind's adapter, stores ledger writes by compare-and-swap (batched with concurrent passes on the
same budget: :mod:`ppml_operator.handlers.ledger_writer`), and carries out the rest of the plan
with :func:`ppml_operator.handlers.act.act`. A lost compare-and-swap re-observes at once; other
failures are retried by kopf.
"""

from __future__ import annotations

import collections
import hashlib
import http.client
import json
import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from ppml_operator import k8s, metrics
from ppml_operator.api import GROUP
from ppml_operator.api import conditions as c
from ppml_operator.handlers.act import EventSink, ForeignChildError, PlanAborted, act
from ppml_operator.handlers.config import Settings
from ppml_operator.handlers.ledger_writer import write_ledger
from ppml_operator.reconcile import dataset, ledger, lifecycle
from ppml_operator.reconcile.lifecycle import InvalidSpec, JobKind, Observed
from ppml_operator.reconcile.plan import Plan
from ppml_operator.render.common import LABEL_JOB_UID, child_base, split_budget_key
from ppml_runtime import contract as rc

Obj = dict[str, Any]
Waiting = Iterable[tuple[str, str, str]]
"""``(creationTimestamp, name, uid)`` of jobs waiting on one of this job's budgets."""

CHILD_NAME_TAKEN = "ChildNameTaken"
"""Event reason: a child's name is taken by an object of another owner (never adopted)."""

PROGRESS_MAX_BYTES = 64 * 1024
"""The most bytes read from a job's metrics endpoint (a few gauges need far less)."""

PROGRESS_TIMEOUT_SECONDS = 1.0
"""The connect and read timeout of one progress scrape."""

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_prices: collections.OrderedDict[tuple[str, str], Any] = collections.OrderedDict()
_prices_guard = threading.Lock()

PRICE_MEMO_SIZE = 1024
"""How many distinct specs' prices are remembered."""
_handled: dict[str, Any] = {}


def handled(uid: str, generation: Any) -> bool:
    """Return whether a pass of this process fully handled that generation of the job."""
    return uid in _handled and _handled[uid] == generation


def _lock(uid: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(uid, threading.Lock())


def price_of(kind: JobKind, job: Obj) -> Any:
    """Return the job's price, computed once per distinct spec (calibration is slow).

    A price depends on the kind, the spec and what resolution added, so jobs with the same
    spec (a burst of identical jobs, a job and its re-created twin) share one computation; the
    memo keeps the most recent :data:`PRICE_MEMO_SIZE` specs.
    """
    # The resolved job's in-memory ``ppml.dev/`` metadata (a federation's owners' data and
    # budgets: reconcile/dataset.py) prices it too; the same spec in another namespace may
    # name other datasets.
    resolved = {k: v for k, v in job["metadata"].items()
                if str(k).startswith("ppml.dev/")}
    key = (kind.kind, hashlib.sha256(json.dumps([job.get("spec") or {}, resolved],
                                                sort_keys=True).encode()).hexdigest())
    with _prices_guard:
        if key in _prices:
            _prices.move_to_end(key)
            return _prices[key]
    price = kind.price(job)
    with _prices_guard:
        _prices[key] = price
        while len(_prices) > PRICE_MEMO_SIZE:
            _prices.popitem(last=False)
    return price


def forget(uid: str) -> None:
    """Drop what the process remembers of a job that is gone (its lock, its last pass)."""
    _handled.pop(uid, None)
    with _locks_guard:
        _locks.pop(uid, None)


def scrape_progress(
    url: str | None, parse: Callable[[str], rc.ContractModel] = rc.parse_progress,
) -> rc.ContractModel | None:
    """Read live gauges from a pod's metrics endpoint: bounded in time and size, no redirects.

    The pod runs code the operator does not control: an answer that is slow, large, a redirect
    or malformed gives no progress, never a stuck worker or an unbounded read.

    Parameters
    ----------
    url
        The endpoint (the kind's ``progress_url``); None scrapes nothing.
    parse
        Reads the body (the kind's ``parse_progress``; a trainer's gauges by default).

    """
    if url is None:
        return None
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80,
                                      timeout=PROGRESS_TIMEOUT_SECONDS)
    try:
        conn.request("GET", parts.path or "/")
        response = conn.getresponse()
        if response.status != 200:
            return None
        body = response.read(PROGRESS_MAX_BYTES + 1)
        if len(body) > PROGRESS_MAX_BYTES:
            return None
        return parse(body.decode("utf-8", "replace"))
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def observe(
    client: k8s.Client,
    kind: JobKind,
    namespace: str,
    name: str,
    settings: Settings,
    waiting: Waiting = (),
    now: datetime | None = None,
) -> Observed | None:
    """Read the job, its budgets and its children; None when the job is gone.

    Children are read only once the job was admitted (or is being deleted). The runner is read
    by name and the pods by label; the other children are listed only when the runner is
    missing (they are created before it, so once it exists they do too). Budgets are read
    when the pass may touch the ledger: before admission, when the runner ended or vanished,
    on deletion, and once the job finished; a routine pass over a running job skips them.
    """
    stored = client.get(kind.kind, namespace, name)
    if stored is None:
        return None
    stored.setdefault("kind", kind.kind)
    stored.setdefault("apiVersion", f"{GROUP}/{k8s.VERSION}")
    meta = stored["metadata"]
    deleting = bool(meta.get("deletionTimestamp"))
    admitted = lifecycle.was_admitted(stored)
    finished = lifecycle.is_finished(stored)
    resolved, refused = resolve(client, stored, settings, enforce=not admitted)
    lost: dataset.Refused | None = None
    if admitted and refused is not None:
        # Resolving an admitted job fails only when its PrivateDataset is gone (the owner
        # deleted it, or its namespace): the job ends, its charges commit (reconcile/dataset.py,
        # lost_resolution names them from the job's status).
        lost, refused = refused, None
        resolved = dataset.lost_resolution(stored)
    job = resolved.job
    exec_ns = resolved.exec_namespace
    price = price_of(kind, job)
    if refused is None and not admitted and not isinstance(price, InvalidSpec):
        refused = dataset.epsilon_refusal(resolved, [(ch.budget, ch.epsilon)
                                                     for ch in price.charges])
    children: list[Obj] = []
    pods: list[Obj] = []
    runner: Obj | None = None
    all_children = True
    namespaces = kind.namespaces(job)
    if admitted or deleting:
        selector = f"{LABEL_JOB_UID}={meta['uid']}"
        runner = client.get("Job", exec_ns, kind.runner_name(child_base(job)))
        if runner is not None and (runner["metadata"].get("labels") or {}).get(
                LABEL_JOB_UID) == meta["uid"]:
            runner.setdefault("kind", "Job")
            children.append(runner)
        else:
            runner = None
        for ns in namespaces:  # every namespace the kind puts children in, by the uid label
            pods.extend(client.list("Pod", ns, selector))
        all_children = runner is None or (deleting and resolved.remote) or (
            deleting and any(ns != namespace for ns in namespaces))
        if all_children:
            for ns in namespaces:
                for child_kind in kind.child_kinds:
                    if child_kind != "Job":
                        children.extend(client.list(child_kind, ns, selector))
    ended = runner is not None and (lifecycle.job_condition(runner, "Complete") is not None
                                    or lifecycle.job_condition(runner, "Failed") is not None)
    if ended:  # the model's delivery starts once the runner completed: no read before
        for extra in kind.delivery_children(job):
            found = client.get(extra[0], namespace, extra[1])
            if found is not None and (found["metadata"].get("labels") or {}).get(
                    LABEL_JOB_UID) == meta["uid"]:
                found.setdefault("kind", extra[0])
                children.append(found)
    if admitted and not finished and lost is None and resolved.remote and (
            runner is None or any((p.get("metadata") or {}).get("deletionTimestamp")
                                  for p in pods)) and _terminating(client, exec_ns):
        # The data owner's namespace is being deleted (looked at only once its pods are
        # going): its namespace controller deletes the pods first and waits for them, and a
        # trainer's pod keeps the Job controller's finalizer while its Job lives (it cannot
        # create a replacement there). End the job now, commit, delete the runner, so that
        # the namespace can go.
        lost = dataset.Refused(
            c.DATASET_DELETED, "spec.datasetRef",
            f"the data owner's namespace {exec_ns} is being deleted")
    need_budgets = (not admitted or runner is None or ended or deleting or finished
                    or lost is not None)
    budgets: dict[str, Obj | None] = {}
    budget_keys: list[str] = []
    if lost is not None:
        budget_keys = dataset.charged_budgets(stored)
    elif not isinstance(price, InvalidSpec) and (refused is None or admitted):
        budget_keys = [charge.budget for charge in price.charges]
    if need_budgets:
        for key in budget_keys:
            # A charge on a data owner's budget names it ns/name (render.common.budget_key).
            budget_ns, budget_name = split_budget_key(key, resolved.budget_namespace)
            budget = client.get("PrivacyBudget", budget_ns, budget_name)
            if budget is not None:
                budget.setdefault("kind", "PrivacyBudget")
            budgets[key] = budget
    mine = (str(meta.get("creationTimestamp")), name)
    ahead = sorted({
        (ts, other) for ts, other, uid in waiting
        if (ts, other) < mine and uid != meta["uid"]
        and not any(b is not None and ledger.find_charge(b, uid) is not None
                    for b in budgets.values())
    })
    progress = None
    if admitted and not finished and not deleting:
        progress = scrape_progress(kind.progress_url(job, pods), kind.parse_progress)
    return Observed(
        job=job,
        budgets=budgets,
        price=price,
        children=children,
        pods=pods,
        waiting_ahead=tuple(n for _, n in ahead),
        settings=settings.render,
        keep_committed=settings.keep_committed,
        progress=progress,
        extras=kind.extras(job, now or datetime.now(UTC)),
        all_children=all_children,
        budget_read=need_budgets,
        exec_namespace=exec_ns,
        refused=refused,
        lost=lost,
        namespaces=namespaces,
    )


def _terminating(client: k8s.Client, namespace: str) -> bool:
    """Return whether a namespace is being deleted (or gone)."""
    found = client.get("Namespace", "", namespace)
    return found is None or bool((found.get("metadata") or {}).get("deletionTimestamp"))


def resolve(client: k8s.Client, job: Obj, settings: Settings, *,
            enforce: bool) -> tuple[dataset.Resolved, dataset.Refused | None]:
    """Resolve the job against the PrivateDataset it names (``reconcile/dataset.py``).

    Before admission (``enforce``) the dataset's policy applies, and a job with inline data
    is checked against the claims the datasets of its namespace protect (one list, only for a
    job that mounts a claim). Once admitted the job is only resolved (the owner may revoke a
    grant; that stops future jobs, not the running one).
    """
    namespace = str(job["metadata"]["namespace"])
    client_refs = dataset.client_dataset_refs(job)
    if client_refs:  # a federation whose silos are data owners
        datasets = {ref: client.get("PrivateDataset", ref[0], ref[1])
                    for ref in sorted(set(client_refs))}
        federation = dataset.resolve_federation(
            job, datasets, operator_namespace=settings.render.operator_namespace,
            enforce=enforce)
        if isinstance(federation, dataset.Refused):
            return dataset.Resolved(job, namespace, namespace), federation
        return federation, None
    ref = dataset.dataset_ref(job)
    found: Obj | None = None
    protected: dict[str, str] = {}
    if ref is not None:
        found = client.get("PrivateDataset", ref[0], ref[1])
    elif enforce and dataset.mounts_claims(job):
        protected = dataset.protected_claims(client.list("PrivateDataset", namespace))
    outcome = dataset.resolve(job, found, protected, enforce=enforce)
    if isinstance(outcome, dataset.Refused):
        return dataset.Resolved(job, namespace, namespace), outcome
    return outcome, None


def _record(kind: JobKind, job: Obj, plan: Plan, *, deleting: bool) -> None:
    """Update the job metrics: admissions, refusals by reason, the job's main condition."""
    meta = job["metadata"]
    ns, uid = meta["namespace"], meta["uid"]
    if deleting:
        metrics.set_job_condition(kind.kind, ns, uid, None)
        return
    before = (job.get("status") or {}).get("conditions")
    after = (plan.status or job.get("status") or {}).get("conditions")
    if c.is_true(after, c.ADMITTED) and not c.is_true(before, c.ADMITTED):
        metrics.ADMISSIONS.labels(kind.kind, ns).inc()
        created = datetime.fromisoformat(str(meta["creationTimestamp"]).replace("Z", "+00:00"))
        metrics.ADMISSION_LATENCY.labels(kind.kind).observe(
            max((datetime.now(UTC) - created).total_seconds(), 0.0))
    refused, old = c.get_condition(after, c.ADMITTED), c.get_condition(before, c.ADMITTED)
    if refused and refused.get("status") == "False" and (
            old is None or old.get("reason") != refused.get("reason")):
        metrics.REFUSALS.labels(kind.kind, ns, str(refused.get("reason"))).inc()
    main = next((t for t in (c.COMPLETE, c.FAILED, c.RUNNING, c.ADMITTED)
                 if c.is_true(after, t)), "Waiting")
    metrics.set_job_condition(kind.kind, ns, uid, main)


def reconcile(
    client: k8s.Client,
    kind: JobKind,
    namespace: str,
    name: str,
    uid: str,
    settings: Settings,
    logger: logging.Logger,
    emit: EventSink | None = None,
    waiting: Callable[[], Waiting] = lambda: (),
    *,
    deleting: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Plan | None:
    """Reconcile one job until a pass's plan is fully applied.

    Returns
    -------
    Plan or None
        The last plan applied (for deletion its ``done`` says whether the finalizer may go),
        or None when the job no longer exists.

    Raises
    ------
    k8s.ConflictError
        When every attempt lost its compare-and-swap (the caller retries later).

    """
    with _lock(uid):
        last_error: Exception | None = None
        for attempt in range(settings.cas_attempts):
            observed = observe(client, kind, namespace, name, settings, waiting(), now())
            if observed is None or observed.job["metadata"]["uid"] != uid:
                return None
            if observed.job["metadata"].get("deletionTimestamp") and not deleting:
                return None  # the delete handler settles it

            def decide(obs: Observed, at: datetime) -> Plan:
                if deleting:
                    return lifecycle.decide_deletion(kind, obs, at)
                return lifecycle.decide(kind, obs, at)

            plan = decide(observed, now())
            try:
                if plan.budget_writes:
                    plan = write_ledger(client, observed, plan, decide, now, logger)
                act(client, kind.kind, observed.job, plan, logger, emit)
            except ForeignChildError as err:
                # Not a race: retrying at once cannot help. Say so on the job, retry later.
                if emit is not None:
                    emit("Warning", CHILD_NAME_TAKEN, str(err))
                raise
            except (k8s.ConflictError, PlanAborted) as err:
                last_error = err
                # Lost a race: back off a little (jittered, so racing writers spread out).
                time.sleep(random.uniform(0, 0.05 * (attempt + 1)))
                continue
            _record(kind, observed.job, plan, deleting=deleting)
            if not deleting:
                _handled[uid] = observed.job["metadata"].get("generation")
            return plan
        assert last_error is not None
        raise last_error
