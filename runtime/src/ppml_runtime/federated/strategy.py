"""Build the server-side strategy of a federation from its config.

The chain, innermost first: the aggregation strategy (FedAvg, FedProx or FedAdam, Flower's
legacy API, which SecAgg+ needs) -> the central-DP wrapper (client-side clipping under SecAgg+,
server-side otherwise) -> :class:`FailClosed` (under DP, a round with fewer replies than the
accountant assumed fails instead of releasing a differently-noised model) ->
:class:`RoundRecorder` (logs each round's metrics for the submitter, tells the live gauges
how long the round took and, when ``PPML_FEDERATION_AUDIT_DIR`` is set, writes what the
strategy received).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedProx,
    Strategy,
)

from ppml_runtime.federated.contract import (
    ENV_AUDIT_DIR,
    ROUND_LOG_PREFIX,
    FederationConfig,
    RoundMetrics,
)

LOG = logging.getLogger("ppml_runtime.federated")


class FederationAbortedError(RuntimeError):
    """A round cannot be aggregated without breaking what the privacy accounting assumed."""


def _weighted(values: list[tuple[int, dict[str, Scalar]]], key: str) -> float | None:
    pairs = [(n, float(m[key])) for n, m in values if key in m]
    total = sum(n for n, _ in pairs)
    return sum(n * v for n, v in pairs) / total if total else None


def _fit_metrics(values: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    loss = _weighted([(int(m.get("records", n)), m) for n, m in values], "train_loss")
    out: dict[str, Scalar] = {} if loss is None else {"train_loss": loss}
    steps = [int(m["steps"]) for _, m in values if "steps" in m]
    if steps:
        out["steps"] = sum(steps)
    return out


def _eval_metrics(values: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    accuracy = _weighted(values, "accuracy")
    return {} if accuracy is None else {"accuracy": accuracy}


class _Delegate(Strategy):
    """A strategy that forwards everything to ``inner``."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """Forward to the inner strategy."""
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Forward to the inner strategy."""
        return self.inner.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Forward to the inner strategy."""
        return self.inner.aggregate_fit(server_round, results, failures)

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """Forward to the inner strategy."""
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """Forward to the inner strategy."""
        return self.inner.aggregate_evaluate(server_round, results, failures)

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        """Forward to the inner strategy."""
        return self.inner.evaluate(server_round, parameters)


class FailClosed(_Delegate):
    """Refuse to aggregate a round with fewer replies than were sampled (under DP)."""

    def __init__(self, inner: Strategy, expected: int) -> None:
        super().__init__(inner)
        self.expected = expected

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Aggregate only when every sampled client replied."""
        if failures or len(results) < self.expected:
            raise FederationAbortedError(
                f"round {server_round} got {len(results)} replies and {len(failures)} failures "
                f"but the privacy accounting assumed {self.expected} clients per round; the "
                "round was not aggregated"
            )
        return super().aggregate_fit(server_round, results, failures)


def _digest(parameters: Parameters) -> str:
    h = hashlib.sha256()
    for tensor in parameters.tensors:
        h.update(tensor)
    return h.hexdigest()


RoundDone = Callable[[int, float], None]
"""Told ``(round, seconds)`` when a round completed (the live gauges' ``round_completed``)."""


class RoundRecorder(_Delegate):
    """Log each round's metrics (one JSON line) and optionally audit what was received.

    ``on_round`` is told each completed round's number and duration, never its loss or
    accuracy (the live gauges serve it to the operator).
    """

    def __init__(self, inner: Strategy, evaluate: bool, audit_dir: str | None = None,
                 on_round: RoundDone | None = None) -> None:
        super().__init__(inner)
        self.evaluate_rounds = evaluate
        self.audit_dir = Path(audit_dir) if audit_dir else None
        self.on_round = on_round
        self.started = time.monotonic()
        self.current: dict[str, Any] = {}

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Start timing the round."""
        self.started = time.monotonic()
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Record what arrived, then aggregate."""
        if self.audit_dir is not None:
            self._audit(server_round, results)
        params, metrics = super().aggregate_fit(server_round, results, failures)
        if self.audit_dir is not None and params is not None:
            arrays = parameters_to_ndarrays(params)
            np.savez(
                self.audit_dir / f"round-{server_round}-aggregate.npz",
                *[np.asarray(a) for a in arrays],
            )
        loss, steps = metrics.get("train_loss"), metrics.get("steps")
        self.current = {
            "round": server_round,
            "clients": len(results),
            "failures": len(failures),
            "steps": int(steps) if isinstance(steps, int | float) else None,
            "train_loss": float(loss) if isinstance(loss, int | float) else None,
        }
        if not self.evaluate_rounds:
            self._emit()
        return params, metrics

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """Aggregate the evaluation and log the round."""
        loss, metrics = super().aggregate_evaluate(server_round, results, failures)
        accuracy = metrics.get("accuracy")
        self.current.update(
            eval_loss=loss,
            accuracy=float(accuracy) if isinstance(accuracy, int | float) else None,
        )
        self._emit()
        return loss, metrics

    def _emit(self) -> None:
        if not self.current:
            return
        self.current["seconds"] = round(time.monotonic() - self.started, 3)
        line = RoundMetrics.model_validate(self.current).model_dump_json(
            by_alias=True, exclude_none=True
        )
        print(ROUND_LOG_PREFIX + line, flush=True)  # the submitter reads it from `flwr log`
        LOG.info("Completed round %s", self.current["round"])
        if self.on_round is not None:
            self.on_round(int(self.current["round"]), float(self.current["seconds"]))
        self.current = {}

    def _audit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]]) -> None:
        assert self.audit_dir is not None
        self.audit_dir.mkdir(parents=True, exist_ok=True)
        received = []
        for index, (_, res) in enumerate(results):
            arrays = parameters_to_ndarrays(res.parameters)
            np.savez(self.audit_dir / f"round-{server_round}-received-{index}.npz", *arrays)
            received.append({"digest": _digest(res.parameters), "numExamples": res.num_examples})
        record = {"round": server_round, "results": received}
        (self.audit_dir / f"round-{server_round}-received.json").write_text(json.dumps(record))


def build_strategy(
    config: FederationConfig, initial_parameters: Parameters | None,
    on_round: RoundDone | None = None,
) -> Strategy:
    """Build the strategy chain for a federation.

    Parameters
    ----------
    config
        The federation config.
    initial_parameters
        The global model's starting point (required by FedAdam).
    on_round
        Told each completed round's number and duration (the live gauges).

    Returns
    -------
    flwr.server.strategy.Strategy
        The outermost strategy of the chain.

    """
    from ppml_runtime.federated.client_app import FIT_CONFIG_ROUND

    n = len(config.clients)
    per_round = config.clients_per_round
    common: dict[str, Any] = {
        "fraction_fit": per_round / n,
        "min_fit_clients": per_round,
        "min_available_clients": max(config.min_clients or n, per_round),
        "fraction_evaluate": 1.0 if config.evaluate else 0.0,
        "min_evaluate_clients": n if config.evaluate else 0,
        "initial_parameters": initial_parameters,
        "on_fit_config_fn": lambda rnd: {FIT_CONFIG_ROUND: rnd},
        "fit_metrics_aggregation_fn": _fit_metrics,
        "evaluate_metrics_aggregation_fn": _eval_metrics,
    }
    s = config.strategy
    strategy: Strategy
    if s.name == "FedProx":
        strategy = FedProx(proximal_mu=float(s.proximal_mu), **common)
    elif s.name == "FedAdam":
        if initial_parameters is None:
            raise ValueError("strategy.name FedAdam needs an initial model (built-in data only)")
        strategy = FedAdam(eta=float(s.server_learning_rate), tau=float(s.tau), **common)
    else:
        strategy = FedAvg(**common)
    central = config.privacy.central
    if central is not None:
        wrapper = (
            DifferentialPrivacyClientSideFixedClipping
            if config.clipping_side == "ClientSide"
            else DifferentialPrivacyServerSideFixedClipping
        )
        strategy = wrapper(
            strategy,
            noise_multiplier=float(central.noise_multiplier),
            clipping_norm=float(central.clipping_norm),
            num_sampled_clients=per_round,
        )
    if config.privacy.mode == "Central":
        strategy = FailClosed(strategy, expected=per_round)
    audit = os.environ.get(ENV_AUDIT_DIR)
    return RoundRecorder(
        strategy,
        evaluate=config.evaluate,
        audit_dir=str(Path(audit) / config.job.uid) if audit else None,
        on_round=on_round,
    )
