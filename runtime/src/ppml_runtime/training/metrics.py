"""Live training progress on a Prometheus endpoint (names from the contract).

:func:`serve_metrics` and :func:`stop_metrics` are the one way a runtime process serves gauges
(the trainer's here, a federation's in :mod:`ppml_runtime.federated.metrics`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ppml_runtime.contract import (
    METRIC_EPOCH,
    METRIC_EPSILON,
    METRIC_LOSS,
    METRIC_STEP,
    METRIC_TOTAL_STEPS,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

logger = logging.getLogger(__name__)


def serve_metrics(port: int, registry: CollectorRegistry) -> Any:
    """Serve ``registry`` as Prometheus text on ``port`` (every interface), in a thread.

    Parameters
    ----------
    port
        The port; ``0`` serves nothing.
    registry
        The gauges to serve.

    Returns
    -------
    object or None
        The server, for :func:`stop_metrics`; ``None`` when nothing is served.

    Raises
    ------
    OSError
        When the port cannot be bound.

    """
    if not port:
        return None
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, registry=registry)
    logger.info("Started metrics endpoint on port %d", port)
    return server


def stop_metrics(server: Any) -> None:
    """Stop a server :func:`serve_metrics` started (``None``: nothing to stop)."""
    if server is not None:
        server.shutdown()
        server.server_close()


class ProgressGauges:
    """Gauges for step, epoch, loss and epsilon, optionally served over HTTP.

    Epsilon costs an accountant query (milliseconds for RDP, more for PRV), so it is refreshed at
    most every ``epsilon_every_seconds`` and on the last step.

    Parameters
    ----------
    port
        Port of the metrics endpoint; ``0`` serves nothing (the gauges still update).
    total_steps
        The steps paid for.
    steps_per_epoch
        Steps in one Poisson epoch.

    """

    def __init__(
        self,
        port: int,
        total_steps: int,
        steps_per_epoch: int,
        epsilon_every_seconds: float = 2.0,
    ) -> None:
        from prometheus_client import CollectorRegistry, Gauge

        self.registry = CollectorRegistry()
        self.step = Gauge(METRIC_STEP, "Optimizer steps spent", registry=self.registry)
        self.epoch = Gauge(METRIC_EPOCH, "Poisson epochs completed", registry=self.registry)
        self.loss = Gauge(METRIC_LOSS, "Training loss of the last batch", registry=self.registry)
        self.epsilon = Gauge(
            METRIC_EPSILON, "Epsilon spent so far (runtime accountant)", registry=self.registry
        )
        self.total = Gauge(METRIC_TOTAL_STEPS, "Optimizer steps paid for", registry=self.registry)
        self.total.set(total_steps)
        self.loss.set(float("nan"))
        self.epsilon.set(0.0)
        self._total_steps = total_steps
        self._steps_per_epoch = steps_per_epoch
        self._every = epsilon_every_seconds
        self._last_epsilon_at = 0.0
        self.server = serve_metrics(port, self.registry)

    def update(self, step: int, loss: float | None, epsilon: Callable[[], float]) -> None:
        """Record the progress after ``step`` steps."""
        self.step.set(step)
        self.epoch.set(step / self._steps_per_epoch)
        if loss is not None:
            self.loss.set(loss)
        now = time.monotonic()
        if step == self._total_steps or now - self._last_epsilon_at >= self._every:
            self.epsilon.set(epsilon())
            self._last_epsilon_at = now

    def close(self) -> None:
        """Stop serving."""
        stop_metrics(self.server)
        self.server = None
