"""Operator settings, read once from the environment at start-up.

- ``PPML_RECONCILE_INTERVAL``: seconds between timer passes over each object (default 10);
- ``PPML_RUNTIME_IMAGE``: the trainer image when a job names none, and the image of every pod
  the operator runs for itself (model export and delivery, a federation's server side);
- ``PPML_OPERATOR_NAMESPACE``: the operator's own namespace (the chart sets it from the pod's);
  only pods of it may scrape a trainer's metrics (default ``ppml-system``);
- ``PPML_TRAINER_COMMAND``: a JSON list replacing the trainer container's command. Meant for
  tests (devcluster runs pods as local processes, so a test may run ``python -c ...`` instead
  of the real trainer); never set in production;
- ``PPML_TRAINER_ENV``: a JSON object of extra environment variables for trainer containers
  (tests only, like the command);
- ``PPML_LEDGER_KEEP``: committed charges kept itemised on a budget before folding (default 50);
- ``PPML_CAS_ATTEMPTS``: compare-and-swap attempts per reconcile pass before backing off.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ppml_operator.render.common import DEFAULT_COMMAND, RenderSettings


@dataclass(frozen=True)
class Settings:
    """What the handlers need to know about the operator's configuration."""

    interval: float = 10.0
    render: RenderSettings = field(default_factory=RenderSettings)
    keep_committed: int = 50
    cas_attempts: int = 8

    @classmethod
    def from_env(cls) -> Settings:
        """Read the settings from ``PPML_*`` environment variables."""
        command = tuple(json.loads(os.environ["PPML_TRAINER_COMMAND"])) if os.environ.get(
            "PPML_TRAINER_COMMAND"
        ) else DEFAULT_COMMAND
        extra_env = tuple(
            sorted(json.loads(os.environ.get("PPML_TRAINER_ENV") or "{}").items())
        )
        image = os.environ.get("PPML_RUNTIME_IMAGE") or RenderSettings().image
        return cls(
            interval=float(os.environ.get("PPML_RECONCILE_INTERVAL") or 10.0),
            render=RenderSettings(
                image=image, command=command, extra_env=extra_env,
                operator_namespace=os.environ.get("PPML_OPERATOR_NAMESPACE") or "ppml-system"),
            keep_committed=int(os.environ.get("PPML_LEDGER_KEEP") or 50),
            cas_attempts=int(os.environ.get("PPML_CAS_ATTEMPTS") or 8),
        )
