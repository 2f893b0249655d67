"""Build the pod status from the containers' states and patch it when it changes."""

from __future__ import annotations

import logging
import time
from typing import Any

from devcluster.kubeapi import ApiError
from devcluster.nodeagent.container import Container, now_iso
from devcluster.nodeagent.podbase import PodBase, resource_version
from devcluster.paths import BRIDGE_IP

log = logging.getLogger("devcluster.nodeagent")


class StatusReporter(PodBase):
    """Report the pod's status to the API server."""

    def _waiting_all(self, reason: str, message: str) -> None:
        for c in self.inits + self.mains:
            if c.proc is None and not c.done:
                c.state = {"waiting": {"reason": reason, "message": message}}

    def _cstatus(self, c: Container) -> dict[str, Any]:
        st: dict[str, Any] = {
            "name": c.name, "image": c.spec.get("image", ""), "imageID": "",
            "state": c.state, "lastState": c.last_state, "ready": c.ready and c.proc is not None,
            "restartCount": c.restart_count, "started": c.proc is not None,
        }
        if c.started_at:
            st["containerID"] = self._cid(c)
        return st

    def _condition(self, ctype: str, ok: bool, reason: str | None = None) -> dict[str, Any]:
        status = "True" if ok else "False"
        prev = self.cond_times.get(ctype)
        if prev is None or prev[0] != status:
            self.cond_times[ctype] = prev = (status, now_iso())
        c = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": prev[1]}
        if reason and not ok:
            c["reason"] = reason
        return c

    def _status(self) -> dict[str, Any]:
        inits_done = all(c.done and c.exit_code == 0 for c in self.inits)
        finished = self.phase in ("Succeeded", "Failed")
        ready = (not finished and inits_done and bool(self.mains)
                 and all(c.ready and c.proc is not None for c in self.mains))
        not_ready_reason = "PodCompleted" if finished else "ContainersNotReady"
        status: dict[str, Any] = {
            "phase": self.phase,
            "conditions": [
                self._condition("PodReadyToStartContainers", self.ip is not None and not finished),
                self._condition("Initialized", inits_done,
                                "PodCompleted" if finished else "ContainersNotInitialized"),
                self._condition("Ready", ready, not_ready_reason),
                self._condition("ContainersReady", ready, not_ready_reason),
                self._condition("PodScheduled", True),
            ],
            "hostIP": BRIDGE_IP,
            "hostIPs": [{"ip": BRIDGE_IP}],
            "startTime": self.start_time,
            "containerStatuses": [self._cstatus(c) for c in self.mains],
        }
        if self.pod_message:
            status["reason"], status["message"] = self.pod_message
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        if self.inits:
            status["initContainerStatuses"] = [self._cstatus(c) for c in self.inits]
        return status

    def _push_status(self) -> None:
        status = self._status()
        if status == self.last_status or self.gone:
            return
        out = None
        for attempt in range(5):
            try:
                out = self.agent.client.patch(
                    f"/api/v1/namespaces/{self.ns}/pods/{self.pname}/status", {"status": status}
                )
                break
            except ApiError as err:
                if err.status == 404:
                    self.gone = True
                    return
                if err.status < 500 and err.status != 429:
                    log.warning("Failed updating status of pod %s/%s: %s", self.ns, self.pname,
                                err)
                    return
                failure: Exception = err
            except OSError as err:
                failure = err
            time.sleep(0.5 * (attempt + 1))
        else:
            # Not recorded as sent: the next wake-up tries again.
            log.warning("Failed updating status of pod %s/%s: %s", self.ns, self.pname, failure)
            return
        self.last_status = status
        if out and out.get("metadata", {}).get("uid") == self.uid:
            with self.cond:
                if resource_version(out) > resource_version(self.pod):
                    self.pod = out
