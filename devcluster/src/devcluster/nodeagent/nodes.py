"""Node registration and heartbeats: Nodes, their Leases, capacity, GPU labels."""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from devcluster.kubeapi import ApiError, Client
from devcluster.nodeagent.container import now_iso
from devcluster.paths import BRIDGE_IP, KUBELET_PORT, Paths, node_names

log = logging.getLogger("devcluster.nodeagent")

HEARTBEAT_S = 10.0
AGENT_VERSION = "v1.34.4-devcluster"


def count_gpus(fake: int) -> int:
    """Return the GPUs ``nvidia-smi -L`` lists, or ``fake`` when it lists none."""
    return len(_gpu_lines()) or fake


def _gpu_lines() -> list[str]:
    """Return ``nvidia-smi -L`` lines (``GPU 0: NVIDIA H200 (UUID: ...)``), none without GPUs."""
    if not shutil.which("nvidia-smi"):
        return []
    p = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    if p.returncode:
        return []
    return [ln for ln in p.stdout.splitlines() if ln.startswith("GPU ")]


def gpu_labels(count: int, product: str) -> dict[str, str | None]:
    """Return the GPU feature discovery labels for ``count`` GPUs (None removes a label)."""
    if count <= 0:
        return {"nvidia.com/gpu.present": None, "nvidia.com/gpu.count": None,
                "nvidia.com/gpu.product": None}
    clean = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in product)[:63]
    return {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.count": str(count),
            "nvidia.com/gpu.product": clean.strip("-_.") or "unknown"}


def memory_ki() -> int:
    """Return the machine's memory in KiB (``MemTotal``)."""
    for ln in Path("/proc/meminfo").read_text().splitlines():
        if ln.startswith("MemTotal:"):
            return int(ln.split()[1])
    return 0


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodeRegistrar:
    """Register the agent's Nodes and keep their Leases and status fresh."""

    client: Client
    paths: Paths
    capacity: dict[str, str]
    allocatable: dict[str, str]
    real_gpus: int
    fake_gpus_file: Path | None
    nodes_file: Path | None
    registered: set[str]
    names: set[str]
    started: str

    def _fake_gpus(self) -> int:
        try:
            return int(self.fake_gpus_file.read_text().strip()) if self.fake_gpus_file else 0
        except (OSError, ValueError):
            return 0

    def _node_names(self) -> list[str]:
        try:
            count = int(self.nodes_file.read_text().strip()) if self.nodes_file else 1
        except (OSError, ValueError):
            count = 1
        return node_names(count)

    def _refresh_gpus(self) -> bool:
        """Re-read the fake GPU count; return whether the capacity changed."""
        if self.real_gpus:
            return False
        n = str(self._fake_gpus())
        if self.capacity["nvidia.com/gpu"] == n:
            return False
        self.capacity["nvidia.com/gpu"] = self.allocatable["nvidia.com/gpu"] = n
        log.info("Changed nvidia.com/gpu capacity of the Nodes to %s", n)
        return True

    def _node_status(self, name: str) -> dict[str, Any]:
        ts = now_iso()

        def cond(t: str, s: str, reason: str, msg: str) -> dict[str, str]:
            return {"type": t, "status": s, "reason": reason, "message": msg,
                    "lastHeartbeatTime": ts, "lastTransitionTime": self.started}

        return {
            "capacity": self.capacity, "allocatable": self.allocatable,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                cond("Ready", "True", "KubeletReady", "devcluster node agent is posting ready"),
            ],
            "addresses": [{"type": "InternalIP", "address": BRIDGE_IP},
                          {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
            "nodeInfo": {
                "machineID": name, "systemUUID": name, "bootID": self.started,
                "kernelVersion": os.uname().release, "osImage": "devcluster",
                "containerRuntimeVersion": "devcluster://processes",
                "kubeletVersion": AGENT_VERSION, "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": "amd64",
            },
        }

    def _labels(self) -> dict[str, str | None]:
        lines = _gpu_lines() if self.real_gpus else []
        product = lines[0].split(":", 1)[1].split("(UUID")[0].strip() if lines else (
            "devcluster-fake-gpu")
        return gpu_labels(int(self.capacity["nvidia.com/gpu"]), product)

    def _post_labels(self, name: str) -> None:
        self.client.patch(f"/api/v1/nodes/{name}", {"metadata": {"labels": self._labels()}})

    def _post_status(self, name: str) -> None:
        self.client.patch(f"/api/v1/nodes/{name}/status", {"status": self._node_status(name)},
                          kind="strategic")

    def register(self, name: str) -> None:
        """Create Node ``name`` (or adopt the existing one) and post its status."""
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "devcluster",
            }},
        }
        try:
            self.client.post("/api/v1/nodes", node)
            log.info("Registered Node %s", name)
        except ApiError as err:
            if err.status != 409:
                raise
        self._post_labels(name)
        self._post_status(name)
        self._renew_lease(name)
        self.registered.add(name)

    def unregister(self, name: str) -> None:
        """Delete Node ``name`` and its Lease (the pod GC then deletes pods bound to it)."""
        for path in (f"/api/v1/nodes/{name}",
                     f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"):
            try:
                self.client.delete(path)
            except ApiError as err:
                if err.status != 404:
                    raise
        self.registered.discard(name)
        log.info("Deleted Node %s", name)

    def _renew_lease(self, name: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        spec = {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": _micro_now()}
        try:
            self.client.patch(path, {"spec": spec})
        except ApiError as err:
            if err.status != 404:
                raise
            self.client.post(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": name, "namespace": "kube-node-lease"}, "spec": spec},
            )

    def heartbeat(self) -> None:
        """Renew Leases every 10 s and node status every 20 s (or on change), forever.

        The node count and the fake GPU count are re-read every second, so ``up --nodes N``
        and ``--fake-gpus N`` apply to a running agent.
        """
        n = 0
        while True:
            try:
                names = self._node_names()
                self.names = set(names)
                for name in names:
                    if name not in self.registered:
                        self.register(name)
                for name in sorted(self.registered - self.names):
                    self.unregister(name)
                changed = self._refresh_gpus()
                for name in names:
                    if n % int(HEARTBEAT_S) == 0:
                        self._renew_lease(name)
                    if changed:
                        self._post_labels(name)
                    if changed or n % int(2 * HEARTBEAT_S) == 0:
                        self._post_status(name)
            except Exception as err:
                log.warning("Failed heartbeat of the Nodes: %s", err)
            n += 1
            time.sleep(1.0)
