"""The run state of one container, and the clock format the node agent writes."""

from __future__ import annotations

import datetime
import subprocess
from dataclasses import dataclass, field
from typing import Any

MAX_MESSAGE = 4096
BACKOFF_MAX_S = 20.0


def now_iso() -> str:
    """Return the current time as RFC 3339 (seconds)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Container:
    """The run state of one container."""

    spec: dict[str, Any]
    init: bool
    proc: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "PodInitializing"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    exit_code: int | None = None
    next_start: float = 0.0
    ready: bool = False
    next_probe: float = 0.0
    next_live: float = 0.0
    live_failures: int = 0
    done: bool = False  # terminated and will not restart

    @property
    def name(self) -> str:
        """The container name."""
        return str(self.spec["name"])
