"""A federation's live progress on a Prometheus endpoint, served by the ServerApp.

The ServerApp runs inside the SuperLink's pod (Flower's SuperExec starts it) and serves, on the
config's ``metricsPort`` (:data:`ppml_runtime.contract.FEDERATION_METRICS_PORT`), read-only
gauges the operator scrapes into ``status.federation`` while the run goes on: the rounds
completed, the rounds in all, and how long each of the newest ``ROUNDS_SERVED`` rounds took
(:class:`ppml_runtime.federated.contract.FederationProgress` is what the operator reads back).

Never a round's loss or accuracy: they are computed on the silos' private records without
noise, so they are not a DP release (they reach only the data owner, through the submitter's
report and an event on its Job). The SuperLink's NetworkPolicy admits only the operator's pods
to this port.
"""

from __future__ import annotations

import logging
from typing import Any

from ppml_runtime.federated.contract import (
    METRIC_ROUND_SECONDS,
    METRIC_ROUNDS_COMPLETED,
    METRIC_TOTAL_ROUNDS,
    ROUNDS_SERVED,
)
from ppml_runtime.training.metrics import serve_metrics, stop_metrics

LOG = logging.getLogger("ppml_runtime.federated")


class FederationGauges:
    """Rounds completed, rounds in all and each round's duration, optionally served over HTTP.

    Parameters
    ----------
    port
        Port of the metrics endpoint; ``0`` serves nothing (the gauges still update). A port
        that cannot be bound is logged and nothing is served: the gauges are telemetry, and the
        federation (already charged) goes on without them.
    total_rounds
        The rounds the federation runs (``rounds``).

    """

    def __init__(self, port: int, total_rounds: int) -> None:
        from prometheus_client import CollectorRegistry, Gauge

        self.registry = CollectorRegistry()
        self.completed = Gauge(METRIC_ROUNDS_COMPLETED, "Federated rounds completed",
                               registry=self.registry)
        self.total = Gauge(METRIC_TOTAL_ROUNDS, "Federated rounds the run was paid for",
                           registry=self.registry)
        self.seconds = Gauge(METRIC_ROUND_SECONDS, "Seconds a completed round took",
                             ["round"], registry=self.registry)
        self.total.set(total_rounds)
        self.completed.set(0)
        self._completed = 0
        self._served: list[int] = []
        self.server: Any = None
        try:
            self.server = serve_metrics(port, self.registry)
        except OSError as err:
            LOG.warning("Could not serve the federation's gauges on port %d: %s", port, err)

    def round_completed(self, server_round: int, seconds: float) -> None:
        """Record that ``server_round`` completed in ``seconds`` (keeps the newest rounds).

        Rounds are counted as the submitter's report counts them: one per round logged.
        """
        self._completed += 1
        self.completed.set(self._completed)
        self.seconds.labels(str(server_round)).set(seconds)
        self._served.append(server_round)
        while len(self._served) > ROUNDS_SERVED:
            self.seconds.remove(str(self._served.pop(0)))

    def close(self) -> None:
        """Stop serving."""
        stop_metrics(self.server)
        self.server = None
