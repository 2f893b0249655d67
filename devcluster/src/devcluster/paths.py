"""Where devcluster keeps its state: ``<repo>/.devcluster`` (git-ignored).

The state directory can be moved with ``DEVCLUSTER_STATE_DIR``; everything else derives from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: The repository root (this file is ``<repo>/devcluster/src/devcluster/paths.py``).
REPO_ROOT = Path(__file__).resolve().parents[3]

#: Names of the static token identities written to ``tokens/<name>``.
TOKEN_USERS = ("admin", "tenant", "data-owner", "viewer")

#: The first node the agent registers; ``up --nodes N`` adds ``devcluster-node-2`` ... ``-N``.
NODE_NAME = "devcluster-node"


def node_names(count: int) -> list[str]:
    """Return the names of the first ``count`` (at least one) devcluster nodes."""
    return [NODE_NAME] + [f"{NODE_NAME}-{i}" for i in range(2, max(1, count) + 1)]

#: A second, independent devcluster on the same machine (tests of ``up``/``down`` themselves)
#: sets ``DEVCLUSTER_INSTANCE=N`` (1-200): its own bridge, subnet, ports and state directory.
INSTANCE = int(os.environ.get("DEVCLUSTER_INSTANCE", "0"))

#: Pod network: a bridge on the host, one network namespace per pod.
BRIDGE = f"ppml{INSTANCE}"
BRIDGE_IP = f"10.244.{INSTANCE}.1"
POD_PREFIX_LEN = 24
SERVICE_CIDR = "10.96.0.0/16"

#: Fixed high ports (override with the environment variables of the same name).
APISERVER_PORT = int(os.environ.get("DEVCLUSTER_APISERVER_PORT", str(16443 + 100 * INSTANCE)))
ETCD_CLIENT_PORT = int(os.environ.get("DEVCLUSTER_ETCD_PORT", str(23790 + 100 * INSTANCE)))
ETCD_PEER_PORT = ETCD_CLIENT_PORT + 10
#: The node agent's log endpoint (the kubelet's port, for ``kubectl logs``).
KUBELET_PORT = int(os.environ.get("DEVCLUSTER_KUBELET_PORT", str(20250 + 100 * INSTANCE)))


@dataclass(frozen=True)
class Paths:
    """The files and directories of one devcluster state directory."""

    root: Path

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig."""
        return self.root / "kubeconfig"

    @property
    def pki(self) -> Path:
        """CA, serving and client certificates, service-account keys."""
        return self.root / "pki"

    @property
    def tokens(self) -> Path:
        """One file per static token identity."""
        return self.root / "tokens"

    @property
    def logs(self) -> Path:
        """Component logs (``<component>.log``) and ``pods/`` container logs."""
        return self.root / "logs"

    @property
    def pod_logs(self) -> Path:
        """Container logs ``<ns>_<pod>_<container>.log``."""
        return self.logs / "pods"

    @property
    def run(self) -> Path:
        """Pid files of the processes ``up`` started."""
        return self.root / "run"

    @property
    def etcd_data(self) -> Path:
        """Etcd's data directory."""
        return self.root / "etcd"

    @property
    def pods(self) -> Path:
        """Per-pod scratch (volumes, hosts files, termination messages)."""
        return self.root / "pods"

    @property
    def pv(self) -> Path:
        """Host directories backing PersistentVolumeClaims: ``pv/<ns>/<claim>``."""
        return self.root / "pv"

    @property
    def config(self) -> Path:
        """Generated component configuration (token file, audit policy, kubeconfigs)."""
        return self.root / "config"

    def token(self, name: str) -> str:
        """Return the bearer token of the static identity ``name``.

        Parameters
        ----------
        name
            One of :data:`TOKEN_USERS`.

        """
        return (self.tokens / name).read_text().strip()


def state_paths() -> Paths:
    """Return the paths of the current state directory (``DEVCLUSTER_STATE_DIR`` or the repo's)."""
    root = os.environ.get("DEVCLUSTER_STATE_DIR")
    if root:
        return Paths(Path(root).resolve())
    base = REPO_ROOT / ".devcluster"
    return Paths(base / f"instance-{INSTANCE}" if INSTANCE else base)


def kubeconfig_path() -> Path:
    """Return the admin kubeconfig path."""
    return state_paths().kubeconfig


def token(name: str) -> str:
    """Return the bearer token of the static identity ``name`` (see :data:`TOKEN_USERS`)."""
    return state_paths().token(name)


def apiserver_url() -> str:
    """Return the API server's URL (it listens on the bridge address, reachable from pods)."""
    return f"https://{BRIDGE_IP}:{APISERVER_PORT}"
