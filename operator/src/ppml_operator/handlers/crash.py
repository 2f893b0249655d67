"""Crash points for the reliability tests: ``PPML_CRASH_AT=after-reserve`` kills the process there.

The operator calls :func:`crashpoint` at every write boundary of the ledger protocol. When the
environment variable ``PPML_CRASH_AT`` names that point (a comma list is accepted), the process
ends at once with ``os._exit(137)``, as if SIGKILLed: no cleanup, no flush, no finalizer. A
``PPML_CRASH_ONCE_FILE`` path makes each point fire once per file (the restarted operator, given
the same file, passes through).
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
        if os.path.exists(once):
            return
        with open(once, "w", encoding="utf-8") as marker:
            marker.write(name)
    sys.stderr.write(f"PPML_CRASH_AT: crashed at {name}\n")
    sys.stderr.flush()
    os._exit(137)
