"""Run one pod: network namespace, volumes, init containers, containers, status, deletion.

One :class:`PodWorker` thread per pod bound to the node. It is level-triggered: every wake-up
(a watch event, a process exit, a timer) recomputes what should run and the pod status, and
patches the status only when it changed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devcluster import network
from devcluster.kubeapi import ApiError
from devcluster.nodeagent import volumes
from devcluster.nodeagent.container import BACKOFF_MAX_S, MAX_MESSAGE, Container, now_iso
from devcluster.nodeagent.env import ConfigError, getter
from devcluster.nodeagent.launch import Launcher
from devcluster.nodeagent.podbase import resource_version
from devcluster.nodeagent.podstatus import StatusReporter
from devcluster.nodeagent.probes import Prober
from devcluster.paths import BRIDGE_IP

if TYPE_CHECKING:
    from devcluster.nodeagent.agent import Agent

log = logging.getLogger("devcluster.nodeagent")




class PodWorker(Launcher, Prober, StatusReporter, threading.Thread):
    """Run one pod until it finishes or is deleted.

    Parameters
    ----------
    agent
        The node agent (API client, IP allocation, hosts files, events).
    pod
        The pod as first seen.

    """

    def __init__(self, agent: Agent, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        threading.Thread.__init__(self, name=f"pod-{meta['namespace']}/{meta['name']}",
                                  daemon=True)
        self.agent = agent
        self.pod = pod
        self.uid: str = meta["uid"]
        self.ns: str = meta["namespace"]
        self.pname: str = meta["name"]
        self.cond = threading.Condition()
        self.kicked = False
        self.gone = False
        self.dir: Path = agent.paths.pods / self.uid
        self.netns = network.netns_name(self.uid)
        self.ip: str | None = None
        self.start_time = now_iso()
        self.t_start = time.monotonic()
        self.inits = [Container(c, True) for c in pod["spec"].get("initContainers", [])]
        self.mains = [Container(c, False) for c in pod["spec"].get("containers", [])]
        self.cond_times: dict[str, tuple[str, str]] = {}
        self.last_status: dict[str, Any] | None = None
        self.phase = "Pending"
        self.pod_message: tuple[str, str] | None = None
        self.volumes: dict[str, Path] = {}
        self.host_network = bool(pod["spec"].get("hostNetwork"))

    # ---- inputs -------------------------------------------------------------------------------

    def update(self, pod: dict[str, Any]) -> None:
        """Record a newer version of the pod and wake the worker."""
        with self.cond:
            if resource_version(pod) >= resource_version(self.pod):
                self.pod = pod
            self.kicked = True
            self.cond.notify_all()

    def deleted(self) -> None:
        """Stop everything now: the pod object is gone (force deletion)."""
        with self.cond:
            self.gone = True
            self.kicked = True
            self.cond.notify_all()



    def running(self) -> bool:
        """Return whether any container process of the pod is alive."""
        return any(c.proc is not None and c.proc.poll() is None for c in self.inits + self.mains)

    @property
    def deleting(self) -> bool:
        """Whether the pod has a deletionTimestamp or is gone."""
        return self.gone or bool(self.pod["metadata"].get("deletionTimestamp"))

    # ---- main loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Run the pod; never raises."""
        try:
            self._run()
        except Exception as err:
            log.exception("Failed running pod %s/%s", self.ns, self.pname)
            self._report_agent_error(err)
        finally:
            self._teardown()
            self.agent.forget(self.uid)

    def _report_agent_error(self, err: Exception) -> None:
        """Mark the pod Failed after an agent error (best effort), so it is not left Running."""
        with contextlib.suppress(Exception):
            self._kill_all(0.0)
            for c in self.inits + self.mains:
                c.done = True
            self.phase = "Failed"
            self.pod_message = ("NodeAgentError", f"devcluster node agent failed: {err}"[:1000])
            self._push_status()

    def _run(self) -> None:
        phase = self.pod.get("status", {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            self._wait_deletion()
            return
        if self.deleting:
            self._finish_deletion()
            return
        restart = self.pod["spec"].get("restartPolicy", "Always")
        if self._started_by_an_earlier_agent():
            if restart == "Never":
                # Its processes died with the earlier agent; running it again would run the
                # workload twice (a second, unpaid pass over private data). Fail it instead.
                self._lost_with_earlier_agent()
                self._wait_deletion()
                return
            self._continue_restart_counts()
        self._setup()
        while not self.deleting:
            try:
                self._prepare_volumes()
                break
            except (ConfigError, ApiError) as err:
                self._waiting_all("CreateContainerConfigError", str(err))
                self._push_status()
                self._sleep(2.0)
        # init containers, in order
        for c in self.inits:
            while not self.deleting and not c.done:
                if self._deadline_exceeded():
                    self._fail_deadline()
                    self._wait_deletion()
                    return
                self._step(c, restart if restart != "Always" else "OnFailure")
                self._push_status()
                if c.done and c.exit_code not in (0, None):
                    self.phase = "Failed"
                    for m in self.mains:
                        m.state = {"waiting": {"reason": "PodInitializing"}}
                    self._push_status()
                    self._teardown_network()
                    self._wait_deletion()
                    return
                self._sleep(0.5 if c.proc is None and not c.done else 5.0)
            if self.deleting:
                break
        if not self.deleting:
            self.phase = "Pending"
            for m in self.mains:
                m.state = {"waiting": {"reason": "ContainerCreating"}}
        while not self.deleting:
            if self._deadline_exceeded():
                self._fail_deadline()
                self._wait_deletion()
                return
            for c in self.mains:
                self._step(c, restart)
                self._probe(c)
            if all(c.done for c in self.mains):
                failed = any(c.exit_code != 0 for c in self.mains)
                self.phase = "Failed" if failed else "Succeeded"
                self._push_status()
                self._teardown_network()
                self._wait_deletion()
                return
            self.phase = "Running"
            self._push_status()
            self._sleep(self._next_wake())
        self._finish_deletion()

    def _old_statuses(self) -> dict[str, dict[str, Any]]:
        st = self.pod.get("status", {})
        return {s["name"]: s for s in st.get("initContainerStatuses", []) + st.get(
            "containerStatuses", [])}

    def _started_by_an_earlier_agent(self) -> bool:
        """Whether a container of this pod was started before (by an agent that restarted)."""
        return any(s.get("containerID") for s in self._old_statuses().values())

    def _continue_restart_counts(self) -> None:
        """Count the re-run as a restart of each container that had started."""
        old = self._old_statuses()
        for c in self.inits + self.mains:
            st = old.get(c.name, {})
            if st.get("containerID"):
                c.restart_count = int(st.get("restartCount", 0)) + 1
                term = st.get("state", {}).get("terminated") or (
                    st.get("lastState", {}).get("terminated"))
                c.last_state = {"terminated": term} if term else {}

    def _lost_with_earlier_agent(self) -> None:
        """Mark a restartPolicy Never pod Failed: its containers were lost with the agent."""
        old = self._old_statuses()
        status = self.pod.get("status", {})
        self.ip = status.get("podIP")
        self.start_time = status.get("startTime") or self.start_time
        for c in self.inits + self.mains:
            st = old.get(c.name, {})
            term = st.get("state", {}).get("terminated")
            if not term:
                term = {
                    "exitCode": 137, "reason": "ContainerStatusUnknown",
                    "message": "The container could not be located when the pod was terminated",
                    "startedAt": st.get("state", {}).get("running", {}).get("startedAt"),
                    "finishedAt": now_iso(),
                }
            c.state = {"terminated": term}
            c.exit_code = int(term.get("exitCode", 137))
            c.restart_count = int(st.get("restartCount", 0))
            c.last_state = st.get("lastState", {})
            c.started_at = term.get("startedAt")
            c.done = True
        self.phase = "Failed"
        self.pod_message = ("NodeAgentRestarted",
                            "devcluster's node agent restarted while the pod ran; its processes "
                            "were lost and restartPolicy Never forbids running it again")
        self.agent.event(self.pod, "Warning", "NodeAgentRestarted", self.pod_message[1])
        self._push_status()

    def _next_wake(self) -> float:
        t = time.monotonic()
        waits = [5.0]
        limit = self.pod["spec"].get("activeDeadlineSeconds")
        if limit is not None:
            waits.append(max(0.05, self.t_start + float(limit) - t))
        for c in self.mains:
            if c.proc is None and not c.done:
                waits.append(max(0.05, c.next_start - t))
            if c.proc is not None and "readinessProbe" in c.spec:
                waits.append(max(0.05, c.next_probe - t))
            if c.proc is not None and "livenessProbe" in c.spec:
                waits.append(max(0.05, c.next_live - t))
        return min(waits)

    # ---- containers ---------------------------------------------------------------------------

    def _step(self, c: Container, restart: str) -> None:
        """Start, reap or schedule a restart of ``c``."""
        if c.proc is not None:
            rc = c.proc.poll()
            if rc is None:
                return
            self._reaped(c, rc, restart)
            return
        if c.done or time.monotonic() < c.next_start:
            return
        try:
            self._start(c)
        except (ConfigError, ApiError, OSError) as err:
            reason = ("CreateContainerConfigError" if isinstance(err, ConfigError)
                      else "CreateContainerError")
            c.state = {"waiting": {"reason": reason, "message": str(err)}}
            c.next_start = time.monotonic() + 2.0

    def _reaped(self, c: Container, rc: int, restart: str) -> None:
        code = rc if rc >= 0 else 128 - rc
        c.exit_code = code
        c.proc = None
        c.ready = False
        term: dict[str, Any] = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": c.started_at,
            "finishedAt": now_iso(),
            "containerID": self._cid(c),
        }
        if rc < 0:
            term["signal"] = -rc
        msg = self._termination_message(c, code)
        if msg:
            term["message"] = msg
        c.state = {"terminated": term}
        again = restart == "Always" or (restart == "OnFailure" and code != 0)
        if again and not self.deleting:
            delay = min(BACKOFF_MAX_S, 1.0 * (2 ** min(c.restart_count, 5)))
            c.next_start = time.monotonic() + delay
            c.last_state = {"terminated": term}
            c.restart_count += 1
            c.state = {"waiting": {"reason": "CrashLoopBackOff",
                                   "message": f"back-off {delay:.0f}s restarting failed container "
                                              f"{c.name} in pod {self.pname}"}}
        else:
            c.done = True
        log.info("Container %s/%s/%s exited with code %d", self.ns, self.pname, c.name, code)



    def _termination_message(self, c: Container, code: int) -> str:
        try:
            msg = self._term_file(c).read_bytes()[:MAX_MESSAGE].decode(errors="replace")
        except OSError:
            msg = ""
        policy = c.spec.get("terminationMessagePolicy", "File")
        if not msg and code != 0 and policy == "FallbackToLogsOnError":
            try:
                data = self._log_file(c).read_bytes()
            except OSError:
                data = b""
            lines = data.splitlines()[-80:]
            msg = b"\n".join(lines)[-2048:].decode(errors="replace")
        return msg













    # ---- setup and teardown -------------------------------------------------------------------

    def _setup(self) -> None:
        for sub in ("tmp", "term", "spec"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        (self.dir / "tmp").chmod(0o1777)
        if self.host_network:
            self.ip = BRIDGE_IP
        else:
            self.ip = self.agent.allocate_ip(self.uid, self.pod.get("status", {}).get("podIP"))
            network.create_pod_netns(self.netns, self.ip)
            # Rules first, processes second: no window where a policy-selected pod is open.
            self.agent.enforce_policies(self.uid)
        hostname = self.pod["spec"].get("hostname") or self.pname
        resolv = (
            f"search {self.ns}.svc.cluster.local svc.cluster.local cluster.local\n"
            "options ndots:5\n"
        )
        (self.dir / "resolv.conf").write_text(resolv)
        self.agent.hosts.register(self.uid, self.ns, self.dir / "hosts", self.ip, hostname,
                                  self.pod["spec"].get("subdomain"))
        images = sorted({c["image"] for c in self.pod["spec"].get("containers", [])
                         + self.pod["spec"].get("initContainers", []) if c.get("image")})
        self.agent.event(
            self.pod, "Normal", "ImageIgnored",
            f"devcluster ignores images ({', '.join(images) or 'none'}): containers run as local "
            "processes in the project's Python environment",
        )
        self.cond_times["PodReadyToStartContainers"] = ("True", now_iso())
        self._push_status()

    def _prepare_volumes(self) -> None:
        self.volumes = volumes.prepare(
            self.agent.client, self._pod_with_ip(), self.dir, self.agent.paths.pv,
            getter(self.agent.client, self.ns), self.agent.audiences,
        )


    def _teardown_network(self) -> None:
        self.agent.release_gpus(self.uid)
        self.agent.hosts.unregister(self.uid)
        if self.host_network:
            return
        network.delete_pod_netns(self.netns)
        self.agent.release_ip(self.uid)

    def _teardown(self) -> None:
        for c in self.inits + self.mains:
            if c.proc is not None and c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self._teardown_network()
        for f in (self.agent.paths.run / "pods").glob(f"{self.uid}_*.pid"):
            f.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- deletion -----------------------------------------------------------------------------

    def _wait_deletion(self) -> None:
        while not self.deleting:
            self._sleep(30.0)
        self._finish_deletion()

    def _finish_deletion(self) -> None:
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        self._kill_all(0.0 if self.gone else float(grace))
        if self.gone:
            return
        with contextlib.suppress(ApiError):
            self._push_status()
        self._teardown_network()
        with contextlib.suppress(ApiError):
            self.agent.client.delete(
                f"/api/v1/namespaces/{self.ns}/pods/{self.pname}",
                {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                 "preconditions": {"uid": self.uid}},
            )
        log.info("Deleted pod %s/%s", self.ns, self.pname)

    def _deadline_exceeded(self) -> bool:
        limit = self.pod["spec"].get("activeDeadlineSeconds")
        return limit is not None and time.monotonic() - self.t_start > float(limit)

    def _fail_deadline(self) -> None:
        """Kill the pod because it ran past ``activeDeadlineSeconds`` (phase Failed)."""
        self.agent.event(self.pod, "Normal", "DeadlineExceeded",
                         "Pod was active on the node longer than the specified deadline")
        self._kill_all(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)))
        for c in self.inits + self.mains:
            c.done = True
        self.phase = "Failed"
        self.pod_message = ("DeadlineExceeded",
                            "Pod was active on the node longer than the specified deadline")
        self._push_status()
        self._teardown_network()

    def _kill_all(self, grace: float) -> None:
        """SIGTERM every running container's process group, SIGKILL after ``grace`` seconds."""
        running = [c for c in self.inits + self.mains if c.proc is not None]
        if running and grace > 0:
            for c in running:
                self.agent.event(self.pod, "Normal", "Killing", f"Stopping container {c.name}")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(
                c.proc is not None and c.proc.poll() is None for c in running
            ):
                self._sleep(min(0.2, max(0.01, deadline - time.monotonic())))
        for c in running:
            assert c.proc is not None
            if c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, signal.SIGKILL)
            c.proc.wait()
            self._reaped(c, c.proc.returncode, "Never")

    # ---- status -------------------------------------------------------------------------------
