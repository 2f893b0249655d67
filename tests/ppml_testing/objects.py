"""Objects as the API server hands them over, and what ``decide`` observes, for every kind.

``training_job()`` and ``make_fedjob(...)`` (:mod:`ppml_testing.fedjobs`) build jobs with a uid,
a generation and a creation time; ``budget()`` a PrivacyBudget with a resourceVersion (the
compare-and-swap's base); ``batch_job()`` and ``trainer_pod()`` a runner and its pods; and
``observed()`` the :class:`~ppml_operator.reconcile.lifecycle.Observed` of any kind, priced
once per spec.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from ppml_operator.reconcile import kinds, lifecycle
from ppml_operator.reconcile.lifecycle import Observed

Obj = dict[str, Any]

STAMP = "2026-12-01T10:00:00Z"
PTJ_UID = "11111111-2222-3333-4444-555555555555"


def training_job(name: str = "digits", *, uid: str = PTJ_UID, **spec: Any) -> Obj:
    """Return a PrivateTrainingJob (DP-SGD on digits, budget ``clinic``), spec overridable."""
    return {
        "apiVersion": "ppml.dev/v1alpha1", "kind": "PrivateTrainingJob",
        "metadata": {"name": name, "namespace": "ns", "uid": uid, "generation": 1,
                     "creationTimestamp": "2026-12-01T09:59:00Z"},
        "spec": {
            "budgetRef": {"name": "clinic"},
            "privacy": {"noiseMultiplier": "1.1", "delta": "1e-5"},
            "data": {"source": "Builtin", "builtin": {"name": "Digits"}, "numRecords": 1797},
            "model": {"architecture": "LogisticRegression"},
            "training": {"epochs": 1, "batchSize": 64, "learningRate": "0.1"},
            **spec,
        },
    }


def budget(name: str = "clinic", epsilon: str = "3", delta: str = "1e-5",
           resource_version: str = "5") -> Obj:
    """Return a PrivacyBudget as read (with a resourceVersion, no status yet)."""
    return {
        "kind": "PrivacyBudget",
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": resource_version},
        "spec": {"epsilon": epsilon, "delta": delta},
    }


def batch_job(name: str = "digits-trainer", *, conditions: tuple[str, ...] = (),
              active: int = 0, failed: int = 0, succeeded: int = 0, suspend: bool = False,
              reason: str = "") -> Obj:
    """Return a runner (batch/v1 Job) with those counters and True conditions."""
    return {
        "kind": "Job", "metadata": {"name": name, "uid": "job-uid"},
        "spec": {"suspend": suspend},
        "status": {"active": active, "failed": failed, "succeeded": succeeded,
                   "conditions": [{"type": t, "status": "True", "reason": reason,
                                   "message": f"job {t.lower()}"} for t in conditions]},
    }


def trainer_pod(phase: str = "Running", node: str | None = "devcluster-node",
                report: str | None = None, rv: str = "42") -> Obj:
    """Return the rank-0 trainer pod, optionally terminated with a report."""
    p: Obj = {"kind": "Pod",
              "metadata": {"name": "digits-trainer-0-abc", "uid": "pod-uid",
                           "resourceVersion": rv,
                           "annotations": {"batch.kubernetes.io/job-completion-index": "0"}},
              "spec": {}, "status": {"phase": phase}}
    if node:
        p["spec"]["nodeName"] = node
    if report:
        p["status"]["containerStatuses"] = [{"name": "trainer", "state": {"terminated": {
            "exitCode": 0, "message": report, "finishedAt": STAMP}}}]
    return p


@functools.cache
def _price(kind: str, spec_key: str) -> Any:
    return lifecycle.kind_of(kind).price(json.loads(spec_key))


def price_of(job: Obj) -> Any:
    """Return the job's price (memoized by kind and spec, as the operator does by generation)."""
    assert kinds.INSTALLED  # importing kinds registered every adapter
    key = json.dumps({k: v for k, v in job.items() if k != "status"}, sort_keys=True)
    return _price(job["kind"], key)


def observed(job: Obj, budgets: dict[str, Obj | None] | Obj | None = None, **kw: Any
             ) -> Observed:
    """Return what ``decide`` observes: the job, its budgets (one, or by name), its price.

    ``children`` may be given as a list or, for convenience, as ``{kind: object}``.
    """
    if budgets is not None and "kind" in budgets:
        budgets = {str(budgets["metadata"]["name"]): budgets}
    children = kw.pop("children", ())
    if isinstance(children, dict):
        children = list(children.values())
    return Observed(job=job, budgets=dict(budgets or {}), price=kw.pop("price", price_of(job)),
                    children=children, **kw)
