"""Prometheus metrics of the operator (served by ``python -m ppml_operator --metrics-port``).

- ``ppml_jobs`` (gauge; kind, namespace, condition): jobs by their current main condition
  (Waiting, Admitted, Running, Complete, Failed);
- ``ppml_admissions_total`` / ``ppml_refusals_total`` (counters; kind, namespace, reason);
- ``ppml_admission_latency_seconds`` (histogram; kind): job creation to admission;
- ``ppml_reconcile_errors_total`` (counter; kind, error);
- ``ppml_ledger_writes_total`` (counter; operation, result): compare-and-swaps and conflicts;
- ``ppml_budget_epsilon`` (gauge; namespace, budget, state = spent | reserved | remaining | total).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)
"""The operator's own registry (not the process-global default)."""

JOBS = Gauge(
    "ppml_jobs", "Jobs by their current main condition.", ["kind", "namespace", "condition"],
    registry=REGISTRY,
)
ADMISSIONS = Counter(
    "ppml_admissions_total", "Jobs admitted (their charge reserved).", ["kind", "namespace"],
    registry=REGISTRY,
)
REFUSALS = Counter(
    "ppml_refusals_total", "Jobs refused or made to wait, by reason.",
    ["kind", "namespace", "reason"], registry=REGISTRY,
)
ADMISSION_LATENCY = Histogram(
    "ppml_admission_latency_seconds", "Seconds from a job's creation to its admission.",
    ["kind"], registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
RECONCILE_ERRORS = Counter(
    "ppml_reconcile_errors_total", "Reconcile passes that raised, by error class.",
    ["kind", "error"], registry=REGISTRY,
)
LEDGER_WRITES = Counter(
    "ppml_ledger_writes_total", "Budget status compare-and-swaps, by operation and result.",
    ["operation", "result"], registry=REGISTRY,
)
BUDGET_EPSILON = Gauge(
    "ppml_budget_epsilon", "Budget epsilon by state (spent, reserved, remaining, total).",
    ["namespace", "budget", "state"], registry=REGISTRY,
)

_job_state: dict[tuple[str, str, str], str] = {}


def set_job_condition(kind: str, namespace: str, uid: str, condition: str | None) -> None:
    """Record a job's current main condition (None when the job is gone)."""
    key = (kind, namespace, uid)
    old = _job_state.pop(key, None)
    if old is not None:
        JOBS.labels(kind, namespace, old).dec()
    if condition is not None:
        _job_state[key] = condition
        JOBS.labels(kind, namespace, condition).inc()


def set_budget(namespace: str, name: str, status: dict[str, object], total: str) -> None:
    """Publish a budget's totals from its status."""
    for state, key in (
        ("spent", "spentEpsilon"), ("reserved", "reservedEpsilon"),
        ("remaining", "remainingEpsilon"),
    ):
        value = status.get(key)
        if value is not None:
            BUDGET_EPSILON.labels(namespace, name, state).set(float(str(value)))
    BUDGET_EPSILON.labels(namespace, name, "total").set(float(total))


def serve(port: int) -> None:
    """Serve the registry over HTTP on ``port`` (a daemon thread)."""
    start_http_server(port, registry=REGISTRY)
