"""The kopf registrations: settings, login, and one level-triggered entry per kind.

Every handler is a few lines: it hands the object's identity to the kind's ``reconcile`` and
maps domain errors to kopf's temporary errors. Handlers return None (kopf would store return
values in status, which the structural schema prunes).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from ppml_operator import k8s, metrics
from ppml_operator.api import GROUP
from ppml_operator.handlers import budget as budget_handler
from ppml_operator.handlers import training as training_handler
from ppml_operator.handlers.act import EventSink
from ppml_operator.handlers.config import Settings

VERSION = k8s.VERSION
PTJ = "privatetrainingjobs"
BUDGETS = "privacybudgets"
FINALIZER = "ppml.dev/finalizer"

SETTINGS = Settings.from_env()
_client: k8s.Client | None = None


def client() -> k8s.Client:
    """Return the process's API client (created at start-up)."""
    global _client
    if _client is None:
        _client = k8s.Client()
    return _client


@kopf.on.startup()
def configure(**kwargs: Any) -> None:
    """Put kopf's bookkeeping under ppml.dev and bound every watch."""
    settings: kopf.OperatorSettings = kwargs["settings"]
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
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


# --- PrivateTrainingJob -----------------------------------------------------------------------
# kopf passes its documented keyword arguments; the handlers take **kwargs so that their types
# match kopf's handler protocols whatever subset they use.


@kopf.index(GROUP, VERSION, PTJ)
def waiting_jobs(**kwargs: Any) -> dict[tuple[str, str], tuple[str, str, str]] | None:
    """Index the jobs waiting for budget, by (namespace, budget), for arrival order."""
    body: kopf.Body = kwargs["body"]
    spec = body.get("spec") or {}
    conds = (body.get("status") or {}).get("conditions") or []
    # Waiting means: tried, and the budget could not pay (a job not looked at yet does not hold
    # back younger ones; a burst of new jobs is admitted as fast as the ledger allows).
    waiting = any(
        c.get("type") == "Admitted" and c.get("status") == "False"
        and c.get("reason") == "BudgetExhausted" for c in conds
    )
    finished = any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conds
    )
    meta = body.get("metadata") or {}
    if not waiting or finished or spec.get("suspend") or meta.get("deletionTimestamp"):
        return None
    budget = str((spec.get("budgetRef") or {}).get("name", ""))
    key = (str(meta.get("namespace")), budget)
    return {key: (str(meta.get("creationTimestamp", "")), str(meta.get("name")), str(meta["uid"]))}


def _reconcile_ptj(kwargs: dict[str, Any], *, deleting: bool = False) -> None:
    body: kopf.Body = kwargs["body"]
    meta = body.get("metadata") or {}
    namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
    index: kopf.Index[Any, Any] | None = kwargs.get("waiting_jobs")
    budget = str(((body.get("spec") or {}).get("budgetRef") or {}).get("name", ""))

    def waiting() -> list[Any]:
        return list(index.get((namespace, budget), [])) if index is not None else []

    try:
        plan = training_handler.reconcile(
            client(), namespace, name, uid, SETTINGS, kwargs["logger"], _emitter(body),
            waiting=waiting, deleting=deleting,
        )
    except (k8s.KubernetesError, OSError) as err:
        metrics.RECONCILE_ERRORS.labels("PrivateTrainingJob", type(err).__name__).inc()
        message = f"Reconcile of {namespace}/{name} failed: {err}"
        raise kopf.TemporaryError(message, delay=1) from err
    if deleting and plan is not None and not plan.done:
        raise kopf.TemporaryError(f"Settling the charge of {namespace}/{name}", delay=1)


@kopf.on.create(GROUP, VERSION, PTJ)
@kopf.on.update(GROUP, VERSION, PTJ)
@kopf.on.resume(GROUP, VERSION, PTJ)
def ptj_changed(**kwargs: Any) -> None:
    """Reconcile a PrivateTrainingJob that was created, changed, or found at start-up."""
    _reconcile_ptj(kwargs)


@kopf.timer(GROUP, VERSION, PTJ, interval=SETTINGS.interval, sharp=False)
def ptj_timer(**kwargs: Any) -> None:
    """Reconcile a PrivateTrainingJob periodically (pods and budgets are polled, not watched)."""
    body: kopf.Body = kwargs["body"]
    conds = (body.get("status") or {}).get("conditions") or []
    finished = any(
        cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True"
        for cond in conds
    )
    if finished and (body.get("spec") or {}).get("ttlSecondsAfterFinished") is None:
        return
    _reconcile_ptj(kwargs)


@kopf.on.delete(GROUP, VERSION, PTJ)
def ptj_deleted(**kwargs: Any) -> None:
    """Settle a deleted job's charge (release or commit) before its finalizer goes."""
    _reconcile_ptj(kwargs, deleting=True)


# --- PrivacyBudget ----------------------------------------------------------------------------


@kopf.on.create(GROUP, VERSION, BUDGETS)
@kopf.on.update(GROUP, VERSION, BUDGETS, field="spec")
@kopf.on.resume(GROUP, VERSION, BUDGETS)
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


# --- FederatedJob (its handlers live in their own module) ---------------------------------------
from ppml_operator.handlers import federated as _federated  # noqa: E402,F401
