"""Crash points for the reliability tests: ``PPML_CRASH_AT=after-reserve`` kills the process there.

The operator calls :func:`crashpoint` at every write boundary of the ledger protocol. When the
environment variable ``PPML_CRASH_AT`` names that point (a comma list is accepted), the process
ends at once with ``os._exit(137)``, as if SIGKILLed: no cleanup, no flush, no finalizer. With
``PPML_CRASH_ONCE_FILE=PATH`` each point fires only once (it leaves ``PATH.<point>`` behind): an
operator restarted with the same settings crashes at the next point not yet visited, so one job
can be walked through every boundary.
"""

from __future__ import annotations

import os
import sys

POINTS = (
    "after-reserve",
    "after-admit",
    "after-create-ServiceAccount",
    "after-create-ConfigMap",
    "after-create-NetworkPolicy",
    "after-create-Job",
    "after-commit",
    "after-complete",
    "after-release",
    "after-orphan-delete",
)
"""Every crash point, in protocol order."""


def crashpoint(name: str) -> None:
    """End the process abruptly if ``PPML_CRASH_AT`` names ``name``."""
    wanted = os.environ.get("PPML_CRASH_AT", "")
    if not wanted or name not in {w.strip() for w in wanted.split(",")}:
        return
    once = os.environ.get("PPML_CRASH_ONCE_FILE")
    if once:
        marker_path = f"{once}.{name}"
        if os.path.exists(marker_path):
            return
        with open(marker_path, "w", encoding="utf-8") as marker:
            marker.write(name)
    sys.stderr.write(f"PPML_CRASH_AT: crashed at {name}\n")
    sys.stderr.flush()
    os._exit(137)
