"""Bring the control plane up and down: etcd, kube-apiserver, controller-manager, scheduler, agent.

Each component is a real binary (or, for the node agent, a Python process) started in its own
process group with a pid file under ``.devcluster/run``; ``down`` stops exactly those, then
every process left in a pod network namespace, then the namespaces and the bridge.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from devcluster import network, pki, procs
from devcluster.kubeapi import ApiError, Client
from devcluster.nodeagent.netpol import enabled as netpol_enabled
from devcluster.paths import (
    APISERVER_PORT,
    BRIDGE_IP,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    NODE_NAME,
    SERVICE_CIDR,
    Paths,
    node_names,
)
from devcluster.tools import bin_dir, find

log = logging.getLogger("devcluster")

#: Start order; ``down`` stops them in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "node-agent")

AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    users: ["system:kube-controller-manager", "system:kube-scheduler", "system:apiserver"]
  - level: None
    resources: [{group: "coordination.k8s.io", resources: ["leases"]}]
  - level: None
    nonResourceURLs: ["/readyz*", "/healthz*", "/livez*", "/version"]
  - level: Metadata
"""


class ClusterError(Exception):
    """devcluster could not be brought up."""


def _wait(what: str, check: Callable[[], bool], timeout_s: float, component: str | None,
          paths: Paths) -> None:
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                log.info("Waited %.1fs for %s", time.monotonic() - t0, what)
                return
        except Exception:
            pass
        if component and not procs.alive(paths.run / f"{component}.pid"):
            tail = (paths.logs / f"{component}.log").read_text(errors="replace")[-3000:]
            raise ClusterError(f"{component} exited while waiting for {what}:\n{tail}")
        time.sleep(0.2)
    raise ClusterError(f"Timed out after {timeout_s:.0f}s waiting for {what}")


def _argv(paths: Paths, bins: Path, name: str) -> list[str]:
    p, c = paths.pki, paths.config
    if name == "etcd":
        return [
            find(bins, "etcd"), "--name=devcluster", f"--data-dir={paths.etcd_data}",
            f"--listen-client-urls=http://127.0.0.1:{ETCD_CLIENT_PORT}",
            f"--advertise-client-urls=http://127.0.0.1:{ETCD_CLIENT_PORT}",
            f"--listen-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}",
            f"--initial-cluster=devcluster=http://127.0.0.1:{ETCD_PEER_PORT}",
            "--unsafe-no-fsync=false", "--log-level=warn",
        ]
    if name == "kube-apiserver":
        return [
            find(bins, "kube-apiserver"),
            f"--advertise-address={BRIDGE_IP}", f"--bind-address={BRIDGE_IP}",
            f"--secure-port={APISERVER_PORT}",
            f"--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--cert-dir={p / 'generated'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction,PodSecurity",
            f"--token-auth-file={c / 'tokens.csv'}",
            f"--audit-policy-file={c / 'audit-policy.yaml'}",
            f"--audit-log-path={paths.logs / 'audit.log'}", "--audit-log-maxsize=100",
            "--audit-log-maxbackup=1",
            f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={p / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true", "--profiling=false", "--v=1",
        ]
    if name == "kube-controller-manager":
        return [
            find(bins, "kube-controller-manager"),
            f"--kubeconfig={c / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={c / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={c / 'controller-manager.kubeconfig'}",
            "--secure-port=0", "--leader-elect=false",
            f"--service-account-private-key-file={p / 'sa.key'}",
            f"--root-ca-file={p / 'ca.crt'}", "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={p / 'ca.crt'}",
            f"--cluster-signing-key-file={p / 'ca.key'}",
            "--controllers=*",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--v=1",
        ]
    if name == "kube-scheduler":
        return [
            find(bins, "kube-scheduler"),
            f"--kubeconfig={c / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={c / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={c / 'scheduler.kubeconfig'}",
            "--secure-port=0", "--leader-elect=false", "--v=1",
        ]
    if name == "node-agent":
        return [
            sys.executable, "-m", "devcluster.nodeagent", f"--state-dir={paths.root}",
            f"--fake-gpus-file={fake_gpus_file(paths)}", f"--nodes-file={nodes_file(paths)}",
        ]
    raise ValueError(name)


def _real_gpus() -> bool:
    return shutil.which("nvidia-smi") is not None


def _etcd_healthy() -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{ETCD_CLIENT_PORT}/health", timeout=2) as r:
        return bool(json.load(r).get("health") == "true")


def readyz(paths: Paths) -> bool:
    """Return whether the API server answers ``/readyz`` with ok."""
    try:
        return bool(Client.admin(paths, timeout=3).get("/readyz") == "ok")
    except (OSError, ApiError):
        return False


def node_ready(client: Client, names: list[str] | None = None) -> bool:
    """Return whether every devcluster Node in ``names`` (default: the first) is Ready."""
    for name in names or [NODE_NAME]:
        node = client.get(f"/api/v1/nodes/{name}")
        conds = node.get("status", {}).get("conditions", [])
        if not any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
            return False
    return True


def _default_sa(client: Client) -> bool:
    client.get("/api/v1/namespaces/default/serviceaccounts/default")
    return True


def running(paths: Paths) -> dict[str, int | None]:
    """Return each component's pid, or None where it does not run."""
    return {n: procs.alive(paths.run / f"{n}.pid") for n in COMPONENTS}


def fake_gpus_file(paths: Paths) -> Path:
    """Return the file holding the fake GPU count the node agent advertises (re-read live)."""
    return paths.config / "fake-gpus"


def nodes_file(paths: Paths) -> Path:
    """Return the file holding the number of Nodes the node agent registers (re-read live)."""
    return paths.config / "nodes"


def current_nodes(paths: Paths) -> list[str]:
    """Return the names of the Nodes the agent is configured to register."""
    try:
        return node_names(int(nodes_file(paths).read_text().strip()))
    except (OSError, ValueError):
        return node_names(1)


def node_gpus(client: Client) -> int:
    """Return the ``nvidia.com/gpu`` capacity the Node reports."""
    node = client.get(f"/api/v1/nodes/{NODE_NAME}")
    return int(node.get("status", {}).get("capacity", {}).get("nvidia.com/gpu", "0"))


def up(
    paths: Paths, fake_gpus: int | None = None, timeout_s: float = 180.0,
    nodes: int | None = None,
) -> None:
    """Start whatever is not running yet, and wait until the cluster can run pods.

    Parameters
    ----------
    paths
        The state directory.
    fake_gpus
        ``nvidia.com/gpu`` capacity to advertise when no GPU is found; None keeps the current
        setting (0 at first). A running node agent picks a new value up within a second.
    timeout_s
        How long each wait may take.
    nodes
        How many Nodes the agent registers; None keeps the current setting (1 at first).
        Applied to a running agent within a second (extra Nodes are deleted when it shrinks).

    Raises
    ------
    ClusterError
        When a component exits or a wait times out.

    """
    bins = bin_dir()
    for d in (paths.root, paths.logs, paths.pod_logs, paths.run, paths.pods, paths.pv):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
    pki.ensure_pki(paths)
    (paths.config / "audit-policy.yaml").write_text(AUDIT_POLICY)
    network.ensure_bridge()
    if fake_gpus is not None:
        fake_gpus_file(paths).write_text(f"{fake_gpus}\n")
    elif not fake_gpus_file(paths).exists():
        fake_gpus_file(paths).write_text("0\n")
    if nodes is not None:
        nodes_file(paths).write_text(f"{max(1, nodes)}\n")
    elif not nodes_file(paths).exists():
        nodes_file(paths).write_text("1\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    state = running(paths)
    if not state["node-agent"] and netpol_enabled():
        try:
            network.ensure_policy_tools()
        except network.NetworkError as err:
            raise ClusterError(str(err)) from err
    if not any(state.values()):
        _kill_orphans(paths)  # e.g. left by a state directory whose pid files were removed
    client = Client.admin(paths, timeout=5)
    for name in COMPONENTS:
        if state[name]:
            continue
        procs.start(name, _argv(paths, bins, name), paths.run, paths.logs, env=env)
        log.info("Started %s", name)
        if name == "etcd":
            _wait("etcd /health", _etcd_healthy, timeout_s, name, paths)
        elif name == "kube-apiserver":
            _wait("kube-apiserver /readyz", lambda: readyz(paths), timeout_s, name, paths)
    _wait("kube-apiserver /readyz", lambda: readyz(paths), timeout_s, "kube-apiserver", paths)
    names = current_nodes(paths)
    _wait(f"Nodes {', '.join(names)} Ready", lambda: node_ready(client, names), timeout_s,
          "node-agent", paths)
    if nodes is not None:
        def no_extra() -> bool:
            listed = client.get("/api/v1/nodes")["items"]
            return {n["metadata"]["name"] for n in listed} <= set(names)

        _wait("extra Nodes to go", no_extra, timeout_s, "node-agent", paths)
    if fake_gpus is not None and not _real_gpus():
        _wait(f"Node {NODE_NAME} to advertise {fake_gpus} GPUs",
              lambda: node_gpus(client) == fake_gpus, timeout_s, "node-agent", paths)
    _wait("ServiceAccount default/default", lambda: _default_sa(client), timeout_s,
          "kube-controller-manager", paths)


_BINARIES = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}


def orphans(paths: Paths) -> list[int]:
    """Return pids of devcluster components of ``paths`` that no pid file records.

    A component is recognised by its binary (or ``-m devcluster.nodeagent``) and an argument
    naming this state directory, so components of other state directories are never matched.
    """
    recorded = {pid for pid in running(paths).values() if pid}
    root = str(paths.root)
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in recorded:
            continue
        try:
            argv = (d / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        ours = Path(argv[0]).name in _BINARIES or "devcluster.nodeagent" in argv[:3]
        if ours and any(a.startswith("--") and root + "/" in a + "/" for a in argv[1:]):
            out.append(int(d.name))
    return out


def _kill_orphans(paths: Paths) -> list[int]:
    pids = orphans(paths)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and
                                                  _not_zombie(p) for p in pids):
            time.sleep(0.1)
    if pids:
        log.info("Stopped orphaned devcluster processes %s", pids)
    return pids


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def down(paths: Paths, purge: bool = False) -> list[str]:
    """Stop every component ``up`` started, every pod process, the pod namespaces and the bridge.

    Parameters
    ----------
    paths
        The state directory.
    purge
        Also delete the state directory (etcd data, certificates, logs).

    Returns
    -------
    list[str]
        The components that were running.

    """
    stopped = [n for n in reversed(COMPONENTS) if procs.stop(n, paths.run)]
    _kill_orphans(paths)
    for ns in network.list_pod_netns():
        network.delete_pod_netns(ns)
    if paths.run.exists():
        for pidfile in (paths.run / "pods").glob("*.pid") if (paths.run / "pods").exists() else []:
            pid = procs.alive(pidfile)
            if pid:
                procs.stop(pidfile.stem, pidfile.parent, grace_s=0)
            pidfile.unlink(missing_ok=True)
    network.delete_bridge()
    if purge and paths.root.exists():
        shutil.rmtree(paths.root)
    return stopped
