"""The node agent: registers the Node, heartbeats, watches its pods and runs them.

Informers (list, then watch, relisting on 410 Gone) feed pods bound to the node to one
:class:`~devcluster.nodeagent.pod.PodWorker` each, and Services plus EndpointSlices to the hosts
file manager. A small provisioner binds PersistentVolumeClaims to host-directory volumes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any

from devcluster import network
from devcluster.kubeapi import ApiError, Client
from devcluster.nodeagent import logserver, netpol
from devcluster.nodeagent.container import now_iso
from devcluster.nodeagent.hosts import Hosts
from devcluster.nodeagent.informer import Informer
from devcluster.nodeagent.nodes import NodeRegistrar, count_gpus, memory_ki
from devcluster.nodeagent.pod import PodWorker
from devcluster.paths import BRIDGE_IP, NODE_NAME, REPO_ROOT, Paths

log = logging.getLogger("devcluster.nodeagent")

class Agent(NodeRegistrar):
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
        self.real_gpus = count_gpus(0)
        gpus = self.real_gpus or self._fake_gpus()
        stat = os.statvfs(paths.root)
        self.capacity = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{memory_ki()}Ki",
            "pods": "110",
            "ephemeral-storage": f"{stat.f_blocks * stat.f_frsize // 1024}Ki",
            "nvidia.com/gpu": str(gpus),
        }
        self.allocatable = dict(self.capacity)
        self.root_entries = self._root_entries()
        self.netpol = netpol.Enforcer(self._pod_addresses, BRIDGE_IP) if netpol.enabled() else None




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

    def allocate_ip(self, uid: str, preferred: str | None = None) -> str:
        """Return the pod address of ``uid``: ``preferred`` if free, else the lowest free one."""
        with self.lock:
            if uid in self.ips:
                return self.ips[uid]
            used = set(self.ips.values())
            pool = network.pod_ips()
            if preferred in pool and preferred not in used:
                self.ips[uid] = str(preferred)
                return str(preferred)
            for ip in pool:
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
        """Return ``uid``'s address to the pool (and drop it from other pods' policy rules)."""
        with self.lock:
            self.ips.pop(uid, None)
        if self.netpol is not None:
            self.netpol.dirty.set()

    def _pod_addresses(self) -> dict[str, tuple[str, str]]:
        with self.lock:
            return {uid: (network.netns_name(uid), ip) for uid, ip in self.ips.items()}

    def enforce_policies(self, uid: str) -> None:
        """Bring every pod's NetworkPolicy rules up to date before pod ``uid``'s processes start.

        Raises
        ------
        RuntimeError
            When ``uid``'s own rules could not be written: its processes must not start open.

        """
        if self.netpol is not None and uid in self.netpol.sync():
            raise RuntimeError("its NetworkPolicy rules could not be written (see the agent log)")

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









    # ---- pods ---------------------------------------------------------------------------------

    def on_pod(self, ev: str, pod: dict[str, Any]) -> None:
        """Informer callback for pods bound to a node (only this agent's nodes are run)."""
        uid = pod["metadata"]["uid"]
        if self.netpol is not None:
            self.netpol.on_pod(ev, pod)
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
        if self.netpol is not None:
            informers += [
                Informer(self.client, "/api/v1/namespaces", self.netpol.on_namespace),
                Informer(self.client, "/apis/networking.k8s.io/v1/networkpolicies",
                         self.netpol.on_policy),
            ]
            threading.Thread(target=self.netpol.run, name="netpol", daemon=True).start()
        else:
            log.warning("NetworkPolicies are not enforced (%s=off)", netpol.ENV_SWITCH)
        for inf in informers:
            inf.start()
        for inf in informers:
            inf.synced.wait(30)
        pods = Informer(self.client, "/api/v1/pods", self.on_pod, fieldSelector="spec.nodeName!=")
        pods.start()
        log.info("Node agent of %s is serving", ", ".join(sorted(self.names)))
        while True:
            time.sleep(3600)
