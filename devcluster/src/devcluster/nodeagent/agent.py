"""The node agent: registers the Node, heartbeats, watches its pods and runs them.

Informers (list, then watch, relisting on 410 Gone) feed pods bound to the node to one
:class:`~devcluster.nodeagent.pod.PodWorker` each, and Services plus EndpointSlices to the hosts
file manager. A small provisioner binds PersistentVolumeClaims to host-directory volumes.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devcluster import network
from devcluster.kubeapi import ApiError, Client
from devcluster.nodeagent import logserver
from devcluster.nodeagent.hosts import Hosts
from devcluster.nodeagent.pod import PodWorker, now_iso
from devcluster.paths import BRIDGE_IP, KUBELET_PORT, NODE_NAME, REPO_ROOT, Paths, node_names

log = logging.getLogger("devcluster.nodeagent")

HEARTBEAT_S = 10.0
AGENT_VERSION = "v1.34.4-devcluster"


class Informer(threading.Thread):
    """List and watch one collection, calling ``handler(event_type, obj)`` for each change."""

    def __init__(self, client: Client, path: str, handler: Callable[[str, dict[str, Any]], None],
                 **params: str) -> None:
        super().__init__(name=f"informer-{path}", daemon=True)
        self.client, self.path, self.handler, self.params = client, path, handler, params
        self.known: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()

    def run(self) -> None:
        """Loop forever: list, watch, relist."""
        while True:
            try:
                lst = self.client.get(self.path, **self.params)
                rv = lst["metadata"]["resourceVersion"]
                seen = {}
                for obj in lst.get("items", []):
                    seen[obj["metadata"]["uid"]] = obj
                    self.handler("ADDED" if obj["metadata"]["uid"] not in self.known
                                 else "MODIFIED", obj)
                for uid, obj in list(self.known.items()):
                    if uid not in seen:
                        self.handler("DELETED", obj)
                self.known = seen
                self.synced.set()
                while True:
                    for ev in self.client.watch(self.path, rv, timeout_s=120, **self.params):
                        obj = ev["object"]
                        rv = obj["metadata"].get("resourceVersion", rv)
                        if ev["type"] == "BOOKMARK":
                            continue
                        uid = obj["metadata"]["uid"]
                        if ev["type"] == "DELETED":
                            self.known.pop(uid, None)
                        else:
                            self.known[uid] = obj
                        self.handler(ev["type"], obj)
            except ApiError as err:
                if err.status != 410:
                    log.warning("Watch of %s failed: %s", self.path, err)
                    time.sleep(1.0)
            except Exception as err:
                log.warning("Watch of %s broke: %s", self.path, err)
                time.sleep(1.0)


def _gpus(fake: int) -> int:
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


def _memory_ki() -> int:
    for ln in Path("/proc/meminfo").read_text().splitlines():
        if ln.startswith("MemTotal:"):
            return int(ln.split()[1])
    return 0


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Agent:
    """The kubelet stand-in for the devcluster Nodes (``devcluster-node``, ``-2``, ...).

    Parameters
    ----------
    paths
        The devcluster state directory.
    fake_gpus_file
        A file holding the ``nvidia.com/gpu`` capacity to advertise when ``nvidia-smi -L`` finds
        no GPU; re-read every second, so the capacity can change while the agent runs.

    """

    def __init__(self, paths: Paths, fake_gpus_file: Path | None = None,
                 nodes_file: Path | None = None) -> None:
        self.paths = paths
        self.client = Client.admin(paths)
        self.hosts = Hosts()
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.ips: dict[str, str] = {}
        self.finished: set[str] = set()
        self.gpu_alloc: dict[tuple[str, str], list[int]] = {}
        self.audiences = ["https://kubernetes.default.svc.cluster.local"]
        self.fake_gpus_file = fake_gpus_file
        self.nodes_file = nodes_file
        self.registered: set[str] = set()
        self.names: set[str] = set(self._node_names())
        self.real_gpus = _gpus(0)
        gpus = self.real_gpus or self._fake_gpus()
        stat = os.statvfs(paths.root)
        self.capacity = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{_memory_ki()}Ki",
            "pods": "110",
            "ephemeral-storage": f"{stat.f_blocks * stat.f_frsize // 1024}Ki",
            "nvidia.com/gpu": str(gpus),
        }
        self.allocatable = dict(self.capacity)
        self.root_entries = self._root_entries()

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

    @staticmethod
    def _root_entries() -> list[str]:
        """Return the entries of ``/root`` a non-root container needs (Python, venv, repo)."""
        out = set()
        for p in (sys.prefix, sys.base_prefix, sys.executable, str(REPO_ROOT)):
            real = Path(os.path.realpath(p))
            if real.parts[:2] == ("/", "root") and len(real.parts) > 2:
                out.add(real.parts[2])
            if Path(p).parts[:2] == ("/", "root") and len(Path(p).parts) > 2:
                out.add(Path(p).parts[2])
        return sorted(out)

    # ---- IPs and events -----------------------------------------------------------------------

    def allocate_ip(self, uid: str) -> str:
        """Return the pod address of ``uid``, allocating the lowest free one."""
        with self.lock:
            if uid in self.ips:
                return self.ips[uid]
            used = set(self.ips.values())
            for ip in network.pod_ips():
                if ip not in used:
                    self.ips[uid] = ip
                    return ip
        raise RuntimeError("pod subnet exhausted")

    def allocate_gpus(self, uid: str, container: str, count: int) -> list[int]:
        """Give container ``container`` of pod ``uid`` ``count`` GPU indices, like a device plugin.

        Raises
        ------
        RuntimeError
            When fewer than ``count`` indices are free (the scheduler should prevent this).

        """
        with self.lock:
            key = (uid, container)
            if key in self.gpu_alloc:
                return self.gpu_alloc[key]
            used = {i for ids in self.gpu_alloc.values() for i in ids}
            free = [i for i in range(int(self.capacity["nvidia.com/gpu"])) if i not in used]
            if len(free) < count:
                raise RuntimeError(f"{count} GPUs requested, {len(free)} free on the node")
            self.gpu_alloc[key] = free[:count]
            return free[:count]

    def release_gpus(self, uid: str) -> None:
        """Free the GPU indices of every container of pod ``uid``."""
        with self.lock:
            for key in [k for k in self.gpu_alloc if k[0] == uid]:
                del self.gpu_alloc[key]

    def release_ip(self, uid: str) -> None:
        """Return ``uid``'s address to the pool."""
        with self.lock:
            self.ips.pop(uid, None)

    def forget(self, uid: str) -> None:
        """Drop the worker of ``uid`` (it has finished: a pod UID never runs twice)."""
        with self.lock:
            self.workers.pop(uid, None)
            self.finished.add(uid)

    def event(self, obj: dict[str, Any], etype: str, reason: str, message: str) -> None:
        """Record a core/v1 Event about ``obj`` from this node (best effort)."""
        meta = obj["metadata"]
        node = obj.get("spec", {}).get("nodeName", NODE_NAME)
        ts = now_iso()
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}",
                         "namespace": meta.get("namespace", "default")},
            "involvedObject": {"kind": obj.get("kind", "Pod"), "apiVersion": "v1",
                               "namespace": meta.get("namespace"), "name": meta["name"],
                               "uid": meta["uid"]},
            "type": etype, "reason": reason, "message": message,
            "source": {"component": "devcluster-node-agent", "host": node},
            "reportingComponent": "devcluster-node-agent", "reportingInstance": node,
            "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
        }
        try:
            self.client.post(f"/api/v1/namespaces/{body['metadata']['namespace']}/events", body)
        except (ApiError, OSError) as err:
            if isinstance(err, ApiError) and "being terminated" in str(err):
                return  # the namespace is going away with its events
            log.warning("Failed recording event %s for %s: %s", reason, meta["name"], err)

    # ---- node ---------------------------------------------------------------------------------

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

    # ---- pods ---------------------------------------------------------------------------------

    def on_pod(self, ev: str, pod: dict[str, Any]) -> None:
        """Informer callback for pods bound to a node (only this agent's nodes are run)."""
        uid = pod["metadata"]["uid"]
        with self.lock:
            w = self.workers.get(uid)
            if w is None and pod["spec"].get("nodeName") not in self.names:
                return
            if w is None and uid in self.finished:
                if ev != "DELETED" and pod["metadata"].get("deletionTimestamp"):
                    threading.Thread(target=self._force_delete, args=(pod,), daemon=True).start()
                return
            if ev == "DELETED":
                if w:
                    w.deleted()
                return
            if w is None:
                w = self.workers[uid] = PodWorker(self, pod)
                w.start()
                return
        w.update(pod)

    def _force_delete(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiError, OSError):
            self.client.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                 "preconditions": {"uid": meta["uid"]}},
            )

    def _pod_running(self, ns: str, name: str) -> bool:
        with self.lock:
            return any(w.ns == ns and w.pname == name and w.running()
                       for w in self.workers.values())

    # ---- persistent volumes -------------------------------------------------------------------

    def on_pvc(self, ev: str, pvc: dict[str, Any]) -> None:
        """Bind each pending claim to a hostPath PersistentVolume under ``.devcluster/pv``."""
        if ev == "DELETED" or pvc.get("spec", {}).get("volumeName"):
            return
        meta = pvc["metadata"]
        ns, name = meta["namespace"], meta["name"]
        hp = self.paths.pv / ns / name
        hp.mkdir(parents=True, exist_ok=True)
        hp.chmod(0o777)
        pv: dict[str, Any] = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"pv-{meta['uid']}",
                         "labels": {"devcluster.ppml.dev/claim-namespace": ns}},
            "spec": {
                "capacity": {"storage": pvc["spec"].get("resources", {}).get("requests", {})
                             .get("storage", "1Gi")},
                "accessModes": pvc["spec"].get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": pvc["spec"].get("storageClassName") or "",
                "volumeMode": pvc["spec"].get("volumeMode", "Filesystem"),
                "hostPath": {"path": str(hp), "type": "DirectoryOrCreate"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "namespace": ns, "name": name, "uid": meta["uid"]},
            },
        }
        try:
            self.client.post("/api/v1/persistentvolumes", pv)
            log.info("Provisioned PersistentVolume %s for claim %s/%s", pv["metadata"]["name"],
                     ns, name)
        except ApiError as err:
            if err.status != 409:
                log.warning("Failed provisioning claim %s/%s: %s", ns, name, err)

    # ---- run ----------------------------------------------------------------------------------

    def run(self) -> None:
        """Register, start heartbeats and informers, and serve until killed."""
        network.ensure_bridge()
        for ns in network.list_pod_netns():
            network.delete_pod_netns(ns)
        logserver.serve(self.paths, self._pod_running)
        self.started = now_iso()
        for name in sorted(self.names):
            self.register(name)
        threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True).start()
        informers = [
            Informer(self.client, "/api/v1/services",
                     lambda e, o: self.hosts.on_service("svc", e, o)),
            Informer(self.client, "/apis/discovery.k8s.io/v1/endpointslices",
                     lambda e, o: self.hosts.on_service("slice", e, o)),
            Informer(self.client, "/api/v1/persistentvolumeclaims", self.on_pvc),
        ]
        for inf in informers:
            inf.start()
        for inf in informers:
            inf.synced.wait(30)
        pods = Informer(self.client, "/api/v1/pods", self.on_pod, fieldSelector="spec.nodeName!=")
        pods.start()
        log.info("Node agent of %s is serving", ", ".join(sorted(self.names)))
        while True:
            time.sleep(3600)
