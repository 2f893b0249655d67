"""Start and stop the processes devcluster owns, each in its own process group, by pid file.

A pid file records ``<pid> <start time>``; a process is ours only while both still match, so a
recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def alive(pidfile: Path) -> int | None:
    """Return the pid recorded in ``pidfile`` if that very process still runs, else None."""
    try:
        pid_s, start = pidfile.read_text().split()
    except (OSError, ValueError):
        return None
    pid = int(pid_s)
    st = _start_time(pid)
    if st != start:
        return None
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return None
    return pid


def start(
    name: str,
    argv: Sequence[str],
    run_dir: Path,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` in a new session, log to ``<log_dir>/<name>.log``, record its pid.

    Returns
    -------
    int
        The pid (also the process group id).

    """
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{name}.log", "ab") as log:
        p = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=dict(env) if env is not None else None, cwd=cwd,
        )
    (run_dir / f"{name}.pid").write_text(f"{p.pid} {_start_time(p.pid)}\n")
    return p.pid


def stop(name: str, run_dir: Path, grace_s: float = 10.0) -> bool:
    """SIGTERM the process group recorded for ``name``, SIGKILL it after ``grace_s``.

    Returns
    -------
    bool
        Whether a live process was found.

    """
    pidfile = run_dir / f"{name}.pid"
    pid = alive(pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and alive(pidfile):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    while alive(pidfile):
        time.sleep(0.05)
    pidfile.unlink(missing_ok=True)
    return True
