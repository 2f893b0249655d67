"""State and small helpers shared by the parts of a pod worker (launch, probes, status)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devcluster.nodeagent.container import Container
from devcluster.paths import BRIDGE_IP

if TYPE_CHECKING:
    from devcluster.nodeagent.agent import Agent


class PodBase:
    """The attributes of a pod worker and the helpers every part of it uses."""

    agent: Agent
    pod: dict[str, Any]
    uid: str
    ns: str
    pname: str
    cond: threading.Condition
    kicked: bool
    gone: bool
    dir: Path
    netns: str
    ip: str | None
    host_network: bool
    start_time: str
    t_start: float
    inits: list[Container]
    mains: list[Container]
    cond_times: dict[str, tuple[str, str]]
    last_status: dict[str, Any] | None
    phase: str
    pod_message: tuple[str, str] | None
    volumes: dict[str, Path]

    def _wake(self) -> None:
        with self.cond:
            self.kicked = True
            self.cond.notify_all()

    def _sleep(self, timeout: float) -> None:
        # A wake-up that came while the worker was busy is not lost: it sets `kicked`.
        with self.cond:
            if not self.kicked:
                self.cond.wait(timeout)
            self.kicked = False

    def _cid(self, c: Container) -> str:
        return f"devcluster://{self.uid}/{c.name}/{c.restart_count}"

    def _term_file(self, c: Container) -> Path:
        return self.dir / "term" / c.name

    def _log_file(self, c: Container) -> Path:
        return self.agent.paths.pod_logs / f"{self.ns}_{self.pname}_{c.name}.log"

    def _enter(self) -> list[str]:
        if self.host_network:
            return ["unshare", "--mount", "--propagation", "slave"]
        return ["ip", "netns", "exec", self.netns]

    def _pod_with_ip(self) -> dict[str, Any]:
        pod = dict(self.pod)
        status = dict(pod.get("status", {}))
        status.update({"podIP": self.ip, "podIPs": [{"ip": self.ip}], "hostIP": BRIDGE_IP,
                       "hostIPs": [{"ip": BRIDGE_IP}]})
        pod["status"] = status
        return pod


def resource_version(obj: dict[str, Any]) -> int:
    """Return the resourceVersion of ``obj`` as an int (0 when absent or not numeric)."""
    try:
        return int(obj["metadata"].get("resourceVersion", "0"))
    except ValueError:
        return 0
