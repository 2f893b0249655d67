"""The kopf registrations: settings, login, and the same level-triggered entry for every kind.

Every handler is a few lines: it hands the object's identity to the kind's ``reconcile`` and
maps domain errors to kopf's temporary errors. Handlers return None (kopf would store return
values in status, which the structural schema prunes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kopf

from ppml_operator import k8s, metrics
from ppml_operator.api import GROUP
from ppml_operator.handlers import budget as budget_handler
from ppml_operator.handlers import jobs
from ppml_operator.handlers.act import EventSink, ForeignChildError
from ppml_operator.handlers.config import Settings
from ppml_operator.reconcile import dataset, kinds, lifecycle
from ppml_operator.reconcile.lifecycle import JobKind

VERSION = k8s.VERSION
BUDGETS = "privacybudgets"
DATASETS = "privatedatasets"
#: kopf's id of the index of datasets by their budget (:func:`dataset_budgets`).
DATASET_BUDGETS_INDEX = "dataset_budgets"
FINALIZER = "ppml.dev/finalizer"

SETTINGS = Settings.from_env()
_client: k8s.Client | None = None


def client() -> k8s.Client:
    """Return the process's API client (created at start-up)."""
    global _client
    if _client is None:
        _client = k8s.Client()
    return _client


class NoDiffBase(kopf.DiffBaseStorage):
    """Store no diff base: every handler here is level-triggered (``kopf.on.event``, timers).

    kopf's create/update/resume handlers need the last handled spec in an annotation, a patch
    after every handled change; none is registered, so nothing needs it, and kopf then sees
    every event as an object it has no changing handlers for (deletion is detected apart).
    """

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:  # noqa: D102
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch,  # noqa: D102
              essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
def configure(**kwargs: Any) -> None:
    """Put kopf's bookkeeping under ppml.dev and bound every watch."""
    settings: kopf.OperatorSettings = kwargs["settings"]
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    # Silent watch stalls are a known kopf issue: bound each watch request and its socket.
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    # A job deleted while its timer is stopping keeps its finalizer until kopf polls the timer
    # again, 60 s by default: a TTL deletion made from that very timer waited a full minute.
    settings.background.cancellation_polling = 1
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "ppml-operator"
    settings.execution.max_workers = 16
    settings.batching.error_delays = (1, 1, 2, 3, 5, 8)


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """Log in exactly as :mod:`ppml_operator.k8s` does (KUBECONFIG, else in-cluster)."""
    cfg = k8s.load_configuration()
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
        "authorization"
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None) if not parts else (
        (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    )
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
    )


def _emitter(body: kopf.Body) -> EventSink:
    def emit(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)

    return emit


# --- Jobs: one set of registrations per kind, all calling the one loop --------------------------
# kopf passes its documented keyword arguments; the handlers take **kwargs so that their types
# match kopf's handler protocols whatever subset they use.


def _index_id(kind: JobKind) -> str:
    return f"waiting_{kind.plural}"


def waiting_index(kind: JobKind) -> Callable[..., dict[tuple[str, str], Any] | None]:
    """Return the index function of a kind's jobs waiting for budget, by (namespace, budget)."""

    def index(**kwargs: Any) -> dict[tuple[str, str], tuple[str, str, str]] | None:
        body: kopf.Body = kwargs["body"]
        spec = body.get("spec") or {}
        conds = (body.get("status") or {}).get("conditions") or []
        # Waiting means: tried, and a budget could not pay (a job not looked at yet does not
        # hold back younger ones; a burst of new jobs is admitted as fast as the ledger allows).
        waiting = any(
            c.get("type") == "Admitted" and c.get("status") == "False"
            and c.get("reason") == "BudgetExhausted" for c in conds
        )
        meta = body.get("metadata") or {}
        finished = lifecycle.is_finished(dict(body))
        if not waiting or finished or spec.get("suspend") or meta.get("deletionTimestamp"):
            return None
        entry = (str(meta.get("creationTimestamp", "")), str(meta.get("name")), str(meta["uid"]))
        return {key: entry for key in dataset.arrival_keys(
            str(meta.get("namespace")), dict(spec), kind.budget_names(dict(spec)))}

    return index


@kopf.index(GROUP, VERSION, DATASETS, id=DATASET_BUDGETS_INDEX)
def dataset_budgets(**kwargs: Any) -> dict[tuple[str, str], tuple[str, str]] | None:
    """Index every PrivateDataset by its arrival key: the budget, in its namespace, it charges."""
    body: kopf.Body = kwargs["body"]
    meta = body.get("metadata") or {}
    budget = ((body.get("spec") or {}).get("budgetRef") or {}).get("name")
    if not budget or meta.get("deletionTimestamp"):
        return None
    namespace = str(meta["namespace"])
    return {dataset.dataset_key(namespace, str(meta["name"])): (namespace, str(budget))}


def budgets_of_datasets(index: Any) -> dict[tuple[str, str], tuple[str, str]]:
    """Return ``dataset key -> budget key`` from the :func:`dataset_budgets` index (or none)."""
    if index is None:
        return {}
    return {key: next(iter(store)) for key, store in index.items() if store}


def _reconcile(kind: JobKind, kwargs: dict[str, Any], *, deleting: bool = False) -> None:
    body: kopf.Body = kwargs["body"]
    meta = body.get("metadata") or {}
    namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
    spec = dict(body.get("spec") or {})
    keys = dataset.arrival_keys(namespace, spec, kind.budget_names(spec))

    def waiting() -> list[tuple[str, str, str]]:
        # Through whichever dataset or inline, older jobs on the same budgets come first.
        ahead = dataset.keys_ahead(keys, budgets_of_datasets(kwargs.get(DATASET_BUDGETS_INDEX)))
        out: list[tuple[str, str, str]] = []
        for other in lifecycle.kinds():  # arrival order holds across kinds on one budget
            index: kopf.Index[Any, Any] | None = kwargs.get(_index_id(other))
            if index is None:
                continue
            for key in ahead:
                out.extend(index.get(key, []))
        return out

    try:
        plan = jobs.reconcile(client(), kind, namespace, name, uid, SETTINGS, kwargs["logger"],
                              _emitter(body), waiting, deleting=deleting)
    except ForeignChildError as err:
        metrics.RECONCILE_ERRORS.labels(kind.kind, type(err).__name__).inc()
        raise kopf.TemporaryError(f"Reconcile of {namespace}/{name} waits: {err}",
                                  delay=10) from err
    except (k8s.KubernetesError, OSError) as err:
        metrics.RECONCILE_ERRORS.labels(kind.kind, type(err).__name__).inc()
        message = f"Reconcile of {namespace}/{name} failed: {err}"
        raise kopf.TemporaryError(message, delay=1) from err
    if deleting:
        if plan is not None and not plan.done:
            raise kopf.TemporaryError(f"Settling the charges of {namespace}/{name}", delay=1)
        jobs.forget(uid)


def register_kind(kind: JobKind) -> None:
    """Register the index, the level-triggered entry, the timer and the delete handler."""
    plural = kind.plural

    def changed(**kwargs: Any) -> None:
        body: kopf.Body = kwargs["body"]
        meta = body.get("metadata") or {}
        event_type = kwargs.get("type")  # None for the listing at start-up (resume)
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            return  # the delete handler settles it
        if FINALIZER not in (meta.get("finalizers") or []):
            return  # kopf adds it first; nothing is reserved for a job that could vanish unseen
        if event_type == "MODIFIED" and jobs.handled(str(meta.get("uid")), meta.get("generation")):
            return  # our own status write, kopf's finalizer patch: nothing new to decide
        try:
            _reconcile(kind, kwargs)
        except kopf.TemporaryError as err:
            # Event handlers are not retried by kopf: the timer looks again within an interval.
            kwargs["logger"].warning("%s; retried by the timer", err)

    def tick(**kwargs: Any) -> None:
        body: kopf.Body = kwargs["body"]
        ttl = (body.get("spec") or {}).get("ttlSecondsAfterFinished")
        if lifecycle.is_finished(dict(body)) and ttl is None:
            return
        if FINALIZER not in ((body.get("metadata") or {}).get("finalizers") or []):
            return
        _reconcile(kind, kwargs)

    def deleted(**kwargs: Any) -> None:
        _reconcile(kind, kwargs, deleting=True)

    kopf.index(GROUP, VERSION, plural, id=_index_id(kind))(waiting_index(kind))
    # Every watch event, not kopf's create/update/resume: those store a diff base and progress
    # in annotations, two more writes per job that buy nothing for a level-triggered reconcile
    # (measured with benchmarks/admission.py: kopf's own patches were 2 of every job's 12
    # requests). Events a pass already saw (same generation) are skipped.
    kopf.on.event(GROUP, VERSION, plural, id=f"{plural}_changed")(changed)
    # Pods and budgets are polled, not watched: the timer reconciles periodically. Its first
    # pass waits one interval: create and resume already reconcile an object as it appears,
    # and a timer firing at once doubled the work of every job in a burst.
    kopf.timer(GROUP, VERSION, plural, interval=SETTINGS.interval, sharp=False,
               initial_delay=SETTINGS.interval, id=f"{plural}_timer")(tick)
    kopf.on.delete(GROUP, VERSION, plural, id=f"{plural}_deleted")(deleted)


for _kind in kinds.INSTALLED:
    register_kind(_kind)


# --- PrivacyBudget ----------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, BUDGETS, id="budget_event")
def budget_event(**kwargs: Any) -> None:
    """Reconcile a budget that appeared or whose spec changed (not our own ledger writes)."""
    body: kopf.Body = kwargs["body"]
    meta = body.get("metadata") or {}
    observed = (body.get("status") or {}).get("observedGeneration")
    if kwargs.get("type") == "DELETED" or (
            kwargs.get("type") == "MODIFIED" and observed == meta.get("generation")):
        return  # a ledger write (they keep totals current) or a metadata edit
    try:
        budget_changed(**kwargs)
    except kopf.TemporaryError as err:
        kwargs["logger"].warning("%s; retried by the timer", err)


@kopf.timer(GROUP, VERSION, BUDGETS, interval=max(SETTINGS.interval, 10.0), sharp=False)
def budget_changed(**kwargs: Any) -> None:
    """Keep a budget's totals, conditions and observedGeneration up to date."""
    meta = kwargs["body"].get("metadata") or {}
    namespace, name = str(meta["namespace"]), str(meta["name"])
    try:
        budget_handler.reconcile(client(), namespace, name, kwargs["logger"])
    except (k8s.KubernetesError, OSError) as err:
        metrics.RECONCILE_ERRORS.labels("PrivacyBudget", type(err).__name__).inc()
        message = f"Reconcile of budget {namespace}/{name} failed: {err}"
        raise kopf.TemporaryError(message, delay=1) from err
