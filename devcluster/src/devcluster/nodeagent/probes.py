"""Readiness and liveness probes: tcpSocket, httpGet and exec."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

from devcluster.nodeagent.container import Container
from devcluster.nodeagent.launch import SHIM
from devcluster.nodeagent.podbase import PodBase


class Prober(PodBase):
    """Probe the pod's containers."""

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
