"""A fluent builder of FederatedJob manifests for the render and decide tables.

``make_fedjob("digits").clients(3).rounds(2).secagg(num_shares=3).central().obj()`` returns the
manifest as the API server would hand it over (metadata with uid and generation).
"""

from __future__ import annotations

import copy
from typing import Any

UID = "99999999-8888-7777-6666-555555555555"
DIGITS = {"source": "Builtin", "builtin": {"name": "Digits"}, "numRecords": 1797}
DIGITS_RECORDS = 1797


def digits_shard(index: int, count: int) -> dict[str, Any]:
    """The data of IID shard ``index`` of ``count`` of Digits (its size as numRecords)."""
    if count == 1:
        return copy.deepcopy(DIGITS)
    size = DIGITS_RECORDS // count + (1 if index < DIGITS_RECORDS % count else 0)
    return {**copy.deepcopy(DIGITS), "numRecords": size,
            "partition": {"scheme": "Iid", "index": index, "count": count}}


class FedJobBuilder:
    """Builds one FederatedJob manifest step by step."""

    def __init__(self, name: str) -> None:
        self._obj: dict[str, Any] = {
            "apiVersion": "ppml.dev/v1alpha1",
            "kind": "FederatedJob",
            "metadata": {"name": name, "namespace": "ns", "uid": UID, "generation": 1,
                         "creationTimestamp": "2026-12-01T09:59:00Z"},
            "spec": {
                "rounds": 2,
                "clients": [],
                "model": {"architecture": "LogisticRegression"},
                "training": {"batchSize": 32, "learningRate": "0.1"},
            },
        }
        self.clients(3)

    @property
    def spec(self) -> dict[str, Any]:
        """The spec being built (mutable)."""
        spec: dict[str, Any] = self._obj["spec"]
        return spec

    def clients(self, n: int, **extra: Any) -> FedJobBuilder:
        """Use ``n`` silos named silo-0..silo-{n-1}, each on its IID shard of Digits."""
        self.spec["clients"] = [
            {"name": f"silo-{i}", "data": digits_shard(i, n), **copy.deepcopy(extra)}
            for i in range(n)
        ]
        return self

    def client(self, index: int, **fields: Any) -> FedJobBuilder:
        """Set fields of one silo."""
        self.spec["clients"][index].update(copy.deepcopy(fields))
        return self

    def rounds(self, n: int) -> FedJobBuilder:
        """Run ``n`` rounds."""
        self.spec["rounds"] = n
        return self

    def secagg(self, **fields: Any) -> FedJobBuilder:
        """Turn on SecAgg+ (camelCase fields, e.g. ``numShares=3``)."""
        self.spec["secureAggregation"] = dict(fields)
        return self

    def central(self, noise: str = "1.0", delta: str = "1e-3", budget: str = "fed-budget",
                **fields: Any) -> FedJobBuilder:
        """Central (client-level) DP charged to ``budget``."""
        self.spec["privacy"] = {"mode": "Central", "noiseMultiplier": noise, "delta": delta,
                                **fields}
        self.spec["budgetRef"] = {"name": budget}
        return self

    def local(self, noise: str = "1.1", delta: str = "1e-5",
              budgets: list[str] | None = None, job_budget: str | None = None) -> FedJobBuilder:
        """Local DP-SGD at each silo; ``budgets`` names each silo's own budget."""
        self.spec["privacy"] = {"mode": "Local", "noiseMultiplier": noise, "delta": delta}
        for entry, budget in zip(self.spec["clients"], budgets or [], strict=False):
            entry["budgetRef"] = {"name": budget}
        if job_budget:
            self.spec["budgetRef"] = {"name": job_budget}
        return self

    def tls(self, enabled: bool) -> FedJobBuilder:
        """Turn TLS on or off."""
        self.spec["tls"] = {"enabled": enabled}
        return self

    def auth(self, enabled: bool) -> FedJobBuilder:
        """Turn SuperNode authentication on or off."""
        self.spec["authentication"] = {"enabled": enabled}
        return self

    def with_spec(self, **fields: Any) -> FedJobBuilder:
        """Set top-level spec fields (camelCase)."""
        self.spec.update(copy.deepcopy(fields))
        return self

    def obj(self) -> dict[str, Any]:
        """Return a copy of the manifest."""
        return copy.deepcopy(self._obj)


def make_fedjob(name: str = "digits") -> FedJobBuilder:
    """Start a FederatedJob: 3 Digits silos, FedAvg, 2 rounds, no DP, TLS and auth on."""
    return FedJobBuilder(name)
