"""Manifest builders for the API tests: a valid object, then edits by dotted path."""

from __future__ import annotations

import copy
from typing import Any

Obj = dict[str, Any]
DELETE = object()


def edit(obj: Obj, **changes: Any) -> Obj:
    """Return a copy of ``obj`` with each ``a__b__c=value`` set (or removed with DELETE)."""
    out = copy.deepcopy(obj)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = out
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return out


def budget(name: str = "clinic", epsilon: str = "3", delta: str = "1e-5") -> Obj:
    return {
        "apiVersion": "ppml.dev/v1alpha1",
        "kind": "PrivacyBudget",
        "metadata": {"name": name},
        "spec": {"epsilon": epsilon, "delta": delta},
    }


def ptj(name: str = "digits", budget: str = "clinic") -> Obj:
    return {
        "apiVersion": "ppml.dev/v1alpha1",
        "kind": "PrivateTrainingJob",
        "metadata": {"name": name},
        "spec": {
            "budgetRef": {"name": budget},
            "privacy": {"noiseMultiplier": "1.1", "delta": "1e-5", "maxGradNorm": "1.0"},
            "data": {"source": "Builtin", "builtin": {"name": "Digits"}, "numRecords": 1797},
            "model": {"architecture": "Mlp", "hiddenUnits": [64]},
            "training": {"epochs": 3, "batchSize": 64, "learningRate": "0.1"},
        },
    }


def client(name: str, records: int | None = None, budget: str | None = None, *,
           index: int = 0, count: int = 3) -> Obj:
    """A silo: ``records`` synthetic records of its own, or IID shard ``index`` of ``count`` of
    Digits when ``records`` is None."""
    from ppml_testing.fedjobs import digits_shard

    data = digits_shard(index, count) if records is None else {
        "source": "Synthetic", "synthetic": {"numFeatures": 64, "numClasses": 10},
        "numRecords": records}
    out: Obj = {"name": name, "data": data}
    if budget:
        out["budgetRef"] = {"name": budget}
    return out


def fedjob(name: str = "silos", clients: int = 3, mode: str = "Central") -> Obj:
    spec: Obj = {
        "rounds": 3,
        "clients": [client(f"silo-{i}", index=i, count=clients) for i in range(clients)],
        "model": {"architecture": "LogisticRegression"},
        "training": {"batchSize": 32, "learningRate": "0.1"},
    }
    if mode != "None":
        spec["budgetRef"] = {"name": "federation"}
        spec["privacy"] = {"mode": mode, "noiseMultiplier": "1.0", "delta": "1e-5"}
    return {
        "apiVersion": "ppml.dev/v1alpha1",
        "kind": "FederatedJob",
        "metadata": {"name": name},
        "spec": spec,
    }
