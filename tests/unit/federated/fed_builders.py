"""A fluent builder of federation configs for the unit tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from ppml_runtime.contract import split_sizes
from ppml_runtime.federated.contract import FederationConfig

DIGITS = 1797


class FedConfigBuilder:
    """Fluent builder: ``FedConfigBuilder().clients(3).secagg(num_shares=3).obj()``."""

    def __init__(self) -> None:
        self.raw: dict[str, Any] = {
            "job": {"name": "digits", "namespace": "ml", "uid": "uid-1"},
            "rounds": 2,
            "clients": [],
            "model": {"architecture": "LogisticRegression"},
            "training": {"epochs": 1, "batchSize": 32, "learningRate": "0.1"},
        }
        self.clients(2)

    def clients(self, n: int) -> FedConfigBuilder:
        shards = [len(s) for s in np.array_split(np.arange(DIGITS), n)]
        self.raw["clients"] = [
            {
                "name": f"silo-{i}",
                "data": {
                    "source": "Builtin",
                    "builtin": {"name": "Digits"},
                    "numRecords": split_sizes(size, "0.2")[0],
                },
                "partition": {"index": i, "count": n},
            }
            for i, size in enumerate(shards)
        ]
        return self

    def set(self, **fields: Any) -> FedConfigBuilder:
        self.raw.update(fields)
        return self

    def secagg(self, num_shares: int = 3, threshold: int = 2, **more: Any) -> FedConfigBuilder:
        self.raw["secureAggregation"] = {
            "numShares": num_shares,
            "reconstructionThreshold": threshold,
            **more,
        }
        return self

    def central(self, per_round: int | None = None, **more: Any) -> FedConfigBuilder:
        self.raw["privacy"] = {
            "mode": "Central",
            "central": {
                "noiseMultiplier": "1.0",
                "clippingNorm": "0.5",
                "clientsPerRound": per_round or len(self.raw["clients"]),
                **more,
            },
        }
        return self

    def local(self, steps: int = 20) -> FedConfigBuilder:
        self.raw["privacy"] = {"mode": "Local"}
        for c in self.raw["clients"]:
            n = c["data"]["numRecords"]
            c["privacy"] = {
                "noiseMultiplier": "1.1",
                "sampleRate": repr(32 / n),
                "maxGradNorm": "1.0",
                "steps": steps,
                "delta": "1e-5",
                "chargedEpsilon": "1.0",
            }
        return self

    def obj(self) -> FederationConfig:
        return FederationConfig.model_validate(self.raw)


def fed() -> FedConfigBuilder:
    return FedConfigBuilder()
