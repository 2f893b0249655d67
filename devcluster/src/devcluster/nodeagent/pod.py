"""Run one pod: network namespace, volumes, init containers, containers, status, deletion.

One :class:`PodWorker` thread per pod bound to the node. It is level-triggered: every wake-up
(a watch event, a process exit, a timer) recomputes what should run and the pod status, and
patches the status only when it changed.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devcluster import network
from devcluster.kubeapi import ApiError
from devcluster.nodeagent import volumes
from devcluster.nodeagent.env import ConfigError, build_env, expand, getter
from devcluster.paths import APISERVER_PORT, BRIDGE_IP

if TYPE_CHECKING:
    from devcluster.nodeagent.agent import Agent

log = logging.getLogger("devcluster.nodeagent")

SHIM = Path(__file__).with_name("shim.py")
#: The user a container runs as when it asks for runAsNonRoot without a runAsUser.
DEFAULT_NONROOT_UID = 65532
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_MESSAGE = 4096

#: Entrypoints (ENTRYPOINT, CMD) of the project's own images, used when a container sets no
#: ``command``: the agent ignores images, so it cannot read them from an image.
IMAGE_ENTRYPOINTS: dict[str, tuple[list[str], list[str]]] = {
    "ppml-runtime": (["python", "-m", "ppml_runtime"], []),
    "ppml-operator": (
        ["python", "-m", "ppml_operator"],
        ["--standalone", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"],
    ),
}


def image_entrypoint(image: str) -> tuple[list[str], list[str]] | None:
    """Return ``(entrypoint, cmd)`` of a known project image (any registry or tag), else None."""
    repo = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    return IMAGE_ENTRYPOINTS.get(repo)
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


class PodWorker(threading.Thread):
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
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
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
            if _rv(pod) >= _rv(self.pod):
                self.pod = pod
            self.kicked = True
            self.cond.notify_all()

    def deleted(self) -> None:
        """Stop everything now: the pod object is gone (force deletion)."""
        with self.cond:
            self.gone = True
            self.kicked = True
            self.cond.notify_all()

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
        self._setup()
        restart = self.pod["spec"].get("restartPolicy", "Always")
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

    def _cid(self, c: Container) -> str:
        return f"devcluster://{self.uid}/{c.name}/{c.restart_count}"

    def _term_file(self, c: Container) -> Path:
        return self.dir / "term" / c.name

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

    def _log_file(self, c: Container) -> Path:
        return self.agent.paths.pod_logs / f"{self.ns}_{self.pname}_{c.name}.log"

    def _identity(self, c: Container) -> tuple[int | None, int | None, list[int], bool]:
        psc = self.pod["spec"].get("securityContext") or {}
        csc = c.spec.get("securityContext") or {}
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        gid = csc.get("runAsGroup", psc.get("runAsGroup"))
        nonroot = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if uid is None and nonroot:
            uid = DEFAULT_NONROOT_UID
        if uid == 0 and nonroot:
            raise ConfigError("container has runAsNonRoot and runAsUser 0")
        if uid is not None and gid is None:
            gid = uid if uid else 0
        groups = list(psc.get("supplementalGroups", []))
        if psc.get("fsGroup") is not None:
            groups.append(psc["fsGroup"])
        nnp = csc.get("allowPrivilegeEscalation") is False
        return uid, gid, groups, nnp

    def _identity_files(self, uid: int | None, gid: int | None) -> list[dict[str, Any]]:
        """Return mounts of /etc/passwd and /etc/group that know ``uid`` and ``gid``.

        An image made for a fixed non-root user has it in its /etc/passwd; the host may not,
        and ``getpass.getuser()`` (used by several libraries) fails for an unknown uid.
        """
        if uid is None:
            return []
        out = []
        for name, ident, line in (
            ("passwd", uid, f"u{uid}:x:{uid}:{gid if gid is not None else uid}::/tmp:"
                            "/usr/sbin/nologin\n"),
            ("group", gid, f"g{gid}:x:{gid}:\n"),
        ):
            if ident is None:
                continue
            host = Path("/etc") / name
            text = host.read_text() if host.exists() else ""
            if any(ln.split(":")[2:3] == [str(ident)] for ln in text.splitlines()):
                continue
            f = self.dir / name
            f.write_text(text + ("" if text.endswith("\n") or not text else "\n") + line)
            f.chmod(0o644)
            out.append({"src": str(f), "dst": f"/etc/{name}"})
        return out

    def _base_env(self) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)
        return {
            "PATH": f"{venv_bin}:{SYSTEM_PATH}",
            "HOSTNAME": self.pod["spec"].get("hostname") or self.pname,
            "HOME": "/tmp",
            "PYTHONUNBUFFERED": "1",
            "KUBERNETES_SERVICE_HOST": BRIDGE_IP,
            "KUBERNETES_SERVICE_PORT": str(APISERVER_PORT),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(APISERVER_PORT),
            "KUBERNETES_PORT": f"tcp://{BRIDGE_IP}:{APISERVER_PORT}",
            "KUBERNETES_PORT_443_TCP": f"tcp://{BRIDGE_IP}:{APISERVER_PORT}",
            "KUBERNETES_PORT_443_TCP_ADDR": BRIDGE_IP,
            "KUBERNETES_PORT_443_TCP_PORT": str(APISERVER_PORT),
            "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
        }

    def _gpu_env(self, c: Container) -> dict[str, str]:
        """Return CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES for the container's GPU limit.

        A container sees only the GPUs allocated to it, and none without a request, as with
        the NVIDIA device plugin.
        """
        res = c.spec.get("resources") or {}
        want = (res.get("limits") or {}).get("nvidia.com/gpu") or (
            res.get("requests") or {}).get("nvidia.com/gpu")
        count = int(want or 0)
        if count == 0:
            return {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void"}
        try:
            ids = self.agent.allocate_gpus(self.uid, c.name, count)
        except RuntimeError as err:
            raise ConfigError(str(err)) from err
        visible = ",".join(str(i) for i in ids)
        return {"CUDA_VISIBLE_DEVICES": visible, "NVIDIA_VISIBLE_DEVICES": visible}

    def _start(self, c: Container) -> None:
        env = build_env(self._pod_with_ip(), c.spec, {**self._base_env(), **self._gpu_env(c)},
                        getter(self.agent.client, self.ns), self.agent.allocatable)
        cmd = [expand(a, env) for a in c.spec.get("command", [])]
        args = [expand(a, env) for a in c.spec.get("args", [])]
        if not cmd:
            known = image_entrypoint(c.spec.get("image", ""))
            if known is None:
                raise ConfigError(
                    f"container {c.name} has no command: devcluster ignores images, so it knows "
                    f"no entrypoint for image {c.spec.get('image')!r}"
                )
            cmd = known[0]
            if "args" not in c.spec:
                args = known[1]
        uid, gid, groups, nnp = self._identity(c)
        term = self._term_file(c)
        term.parent.mkdir(parents=True, exist_ok=True)
        term.write_bytes(b"")
        term.chmod(0o666)
        if uid is not None:
            os.chown(term, uid, gid if gid is not None else -1)
        mounts = volumes.mounts_for(c.spec, self.volumes)
        mounts += [
            {"src": str(self.dir / "tmp"), "dst": "/tmp"},
            {"src": str(self.dir / "hosts"), "dst": "/etc/hosts"},
            {"src": str(self.dir / "resolv.conf"), "dst": "/etc/resolv.conf"},
            {"src": str(term), "dst": c.spec.get("terminationMessagePath", "/dev/termination-log")},
        ]
        mounts += self._identity_files(uid, gid)
        mounts.sort(key=lambda m: m["dst"].rstrip("/").count("/"))
        spec = {
            "argv": cmd + args, "env": env, "mounts": mounts,
            "workingDir": c.spec.get("workingDir"),
            "uid": uid, "gid": gid, "groups": groups, "noNewPrivs": nnp,
            "hostname": (self.pod["spec"].get("hostname") or self.pname)[:63],
        }
        if uid not in (None, 0):
            spec["exposeRoot"] = self.agent.root_entries
            spec["rootStage"] = str(self.dir / "rootstage")
            for name in self.volumes:
                vdir = self.dir / "volumes" / name
                if vdir.is_dir() and any(v.get("emptyDir") is not None and v["name"] == name
                                         for v in self.pod["spec"].get("volumes", [])):
                    os.chown(vdir, uid, gid if gid is not None else -1)
        specfile = self.dir / "spec" / f"{c.name}.json"
        specfile.parent.mkdir(parents=True, exist_ok=True)
        specfile.write_text(json.dumps(spec))
        specfile.chmod(0o600)
        logf = self._log_file(c)
        with open(logf, "ab") as out:
            # `ip netns exec` enters the pod's network namespace and a private mount namespace
            # (propagation slave); a hostNetwork pod only gets the mount namespace.
            enter = self._enter()
            c.proc = subprocess.Popen(
                [*enter, sys.executable, "-I", "-S", str(SHIM), str(specfile)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (self.agent.paths.run / "pods").mkdir(parents=True, exist_ok=True)
        pidfile = self.agent.paths.run / "pods" / f"{self.uid}_{c.name}.pid"
        with contextlib.suppress(OSError):
            st = Path(f"/proc/{c.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
            pidfile.write_text(f"{c.proc.pid} {st}\n")
        c.started_at = now_iso()
        c.state = {"running": {"startedAt": c.started_at}}
        c.exit_code = None
        c.next_probe = time.monotonic() + float(
            (c.spec.get("readinessProbe") or {}).get("initialDelaySeconds", 0))
        c.ready = "readinessProbe" not in c.spec
        c.live_failures = 0
        c.next_live = time.monotonic() + float(
            (c.spec.get("livenessProbe") or {}).get("initialDelaySeconds", 0))
        proc = c.proc
        threading.Thread(target=self._reap_waiter, args=(proc,), daemon=True).start()
        log.info("Started container %s/%s/%s (pid %d)", self.ns, self.pname, c.name, proc.pid)
        if c.restart_count == 0:
            self.agent.event(self.pod, "Normal", "Started", f"Started container {c.name}")

    def _reap_waiter(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        self._wake()

    def _probe(self, c: Container) -> None:
        self._liveness(c)
        probe = c.spec.get("readinessProbe")
        if c.proc is None or not probe or time.monotonic() < c.next_probe:
            return
        ok = self._probe_once(c, probe)
        period = float(probe.get("periodSeconds", 10))
        c.next_probe = time.monotonic() + (period if ok else min(period, 1.0))
        c.ready = ok

    def _liveness(self, c: Container) -> None:
        """Run the livenessProbe; after failureThreshold failures, kill the container.

        The restart policy then decides, as for any exit (the kubelet's behaviour).
        """
        probe = c.spec.get("livenessProbe")
        if c.proc is None or not probe or time.monotonic() < c.next_live:
            return
        c.next_live = time.monotonic() + float(probe.get("periodSeconds", 10))
        if self._probe_once(c, probe):
            c.live_failures = 0
            return
        c.live_failures += 1
        if c.live_failures < int(probe.get("failureThreshold", 3)):
            return
        self.agent.event(self.pod, "Warning", "Unhealthy",
                         f"Liveness probe of container {c.name} failed {c.live_failures} times")
        self.agent.event(self.pod, "Normal", "Killing",
                         f"Container {c.name} failed liveness probe, will be restarted")
        grace = float(probe.get("terminationGracePeriodSeconds")
                      or self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        proc = c.proc
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)

        def kill_after_grace() -> None:
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

        threading.Thread(target=kill_after_grace, daemon=True).start()
        c.live_failures = 0
        c.next_live = float("inf")  # until the restarted container resets it

    def _probe_once(self, c: Container, probe: dict[str, Any]) -> bool:
        timeout = float(probe.get("timeoutSeconds", 1))
        ports = {p.get("name"): p["containerPort"] for p in c.spec.get("ports", [])}
        try:
            if "tcpSocket" in probe:
                port = probe["tcpSocket"]["port"]
                port = ports.get(port, port)
                with socket.create_connection((self.ip or "", int(port)), timeout=timeout):
                    return True
            if "httpGet" in probe:
                hg = probe["httpGet"]
                port = ports.get(hg["port"], hg["port"])
                url = f"http://{self.ip}:{int(port)}{hg.get('path', '/')}"
                with urllib.request.urlopen(url, timeout=timeout) as r:
                    return bool(200 <= r.status < 400)
            if "exec" in probe:
                return self._exec_probe(c, probe["exec"].get("command", []), timeout)
        except OSError:
            return False
        return True  # a probe of a kind devcluster does not run (grpc) counts as passing

    def _enter(self) -> list[str]:
        if self.host_network:
            return ["unshare", "--mount", "--propagation", "slave"]
        return ["ip", "netns", "exec", self.netns]

    def _exec_probe(self, c: Container, command: list[str], timeout: float) -> bool:
        """Run ``command`` like the container (same namespaces, mounts, env, user); rc 0 passes."""
        specfile = self.dir / "spec" / f"{c.name}.json"
        spec = json.loads(specfile.read_text())
        spec["argv"] = command
        probefile = self.dir / "spec" / f"{c.name}.probe.json"
        probefile.write_text(json.dumps(spec))
        probefile.chmod(0o600)
        enter = self._enter()
        try:
            p = subprocess.run([*enter, sys.executable, "-I", "-S", str(SHIM), str(probefile)],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                               start_new_session=True)
        except subprocess.TimeoutExpired:
            return False
        return p.returncode == 0

    # ---- setup and teardown -------------------------------------------------------------------

    def _setup(self) -> None:
        for sub in ("tmp", "term", "spec"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        (self.dir / "tmp").chmod(0o1777)
        if self.host_network:
            self.ip = BRIDGE_IP
        else:
            self.ip = self.agent.allocate_ip(self.uid)
            network.create_pod_netns(self.netns, self.ip)
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

    def _pod_with_ip(self) -> dict[str, Any]:
        pod = dict(self.pod)
        status = dict(pod.get("status", {}))
        status.update({"podIP": self.ip, "podIPs": [{"ip": self.ip}], "hostIP": BRIDGE_IP,
                       "hostIPs": [{"ip": BRIDGE_IP}]})
        pod["status"] = status
        return pod

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
                if _rv(out) > _rv(self.pod):
                    self.pod = out


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion", "0"))
    except ValueError:
        return 0
