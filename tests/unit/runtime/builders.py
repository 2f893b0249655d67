"""Fluent builders of trainer configs and tiny data sets for the runtime tests."""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Any

from ppml_runtime.contract import TrainerConfig, exact_decimal_str


class ConfigBuilder:
    """``make_config().synthetic(200).mlp().steps(20).obj()``"""

    def __init__(self) -> None:
        self.raw: dict[str, Any] = {
            "job": {"name": "unit", "namespace": "default", "uid": "uid-1"},
            "data": {
                "source": "Synthetic",
                "synthetic": {"numFeatures": 8, "numClasses": 2, "seed": 1},
                "numRecords": 200,
                "testFraction": "0.2",
                "splitSeed": 0,
            },
            "model": {"architecture": "LogisticRegression"},
            "training": {"epochs": 1, "batchSize": 20, "learningRate": "0.5"},
            "privacy": {
                "noiseMultiplier": "1.0",
                "sampleRate": "0.1",
                "maxGradNorm": "1.0",
                "steps": 10,
                "delta": "1e-5",
                "chargedEpsilon": "10",
                "accountant": "rdp",
            },
            "metricsPort": 0,
        }

    def _rate(self) -> None:
        batch = self.raw["training"]["batchSize"]
        records = self.raw["data"]["numRecords"]
        self.raw["privacy"]["sampleRate"] = exact_decimal_str(Fraction(batch, records))

    def synthetic(self, records: int, features: int = 8, classes: int = 2) -> ConfigBuilder:
        self.raw["data"].update(
            source="Synthetic",
            numRecords=records,
            synthetic={"numFeatures": features, "numClasses": classes, "seed": 1},
        )
        self.raw["data"].pop("builtin", None)
        self._rate()
        return self

    def builtin(self, name: str, records: int) -> ConfigBuilder:
        self.raw["data"].update(source="Builtin", builtin={"name": name}, numRecords=records)
        self.raw["data"].pop("synthetic", None)
        self._rate()
        return self

    def batch(self, size: int) -> ConfigBuilder:
        self.raw["training"]["batchSize"] = size
        self._rate()
        return self

    def model(self, architecture: str, **extra: Any) -> ConfigBuilder:
        self.raw["model"] = {"architecture": architecture, **extra}
        return self

    def steps(self, steps: int) -> ConfigBuilder:
        self.raw["privacy"]["steps"] = steps
        return self

    def privacy(self, **fields: Any) -> ConfigBuilder:
        self.raw["privacy"].update(fields)
        return self

    def set(self, section: str, **fields: Any) -> ConfigBuilder:
        self.raw.setdefault(section, {}).update(fields)
        return self

    def checkpoint(self, directory: str) -> ConfigBuilder:
        self.raw["checkpoint"] = {"dir": directory}
        return self

    def release(self, **fields: Any) -> ConfigBuilder:
        self.raw["release"] = {**self.raw.get("release", {}), **fields}
        return self

    def dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.raw)

    def obj(self) -> TrainerConfig:
        return TrainerConfig.model_validate(self.dict())


def make_config() -> ConfigBuilder:
    return ConfigBuilder()
