"""The importable devcluster API used by tests and tools.

>>> from devcluster.cluster import ensure_up
>>> c = ensure_up()
>>> c.kubectl("get", "nodes").stdout
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from devcluster import controlplane
from devcluster.kubeapi import Client
from devcluster.paths import Paths, apiserver_url, state_paths
from devcluster.tools import bin_dir, find


@dataclass(frozen=True)
class Cluster:
    """A running devcluster: where its kubeconfig and binaries are, and a kubectl helper.

    Attributes
    ----------
    paths
        The state directory.
    bin_dir
        The directory holding kubectl, helm and the control-plane binaries.
    started
        Whether this handle's ``ensure_up`` started the cluster (so the caller should stop it).

    """

    paths: Paths
    bin_dir: Path
    started: bool = False

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig."""
        return self.paths.kubeconfig

    def token(self, name: str) -> str:
        """Return the bearer token of a static identity (admin, tenant, data-owner, viewer)."""
        return self.paths.token(name)

    def user_kubeconfig(self, name: str) -> Path:
        """Return a kubeconfig authenticating as the static token identity ``name``."""
        return self.paths.config / f"{name}-token.kubeconfig"

    def api(self, user: str | None = None) -> Client:
        """Return a minimal REST client (:class:`devcluster.kubeapi.Client`) for the cluster.

        Parameters
        ----------
        user
            A static token identity to act as (default: the admin client certificate).

        """
        if user is None:
            return Client.admin(self.paths)
        return Client(apiserver_url(), self.paths.pki / "ca.crt", token=self.token(user))

    def set_fake_gpus(self, n: int, timeout_s: float = 30.0) -> None:
        """Advertise ``n`` fake ``nvidia.com/gpu`` on the node and wait until the Node shows it.

        Parameters
        ----------
        n
            The GPU capacity (ignored by the agent when ``nvidia-smi -L`` finds real GPUs).
        timeout_s
            How long to wait for the Node's capacity to change.

        """
        controlplane.fake_gpus_file(self.paths).write_text(f"{n}\n")
        if shutil.which("nvidia-smi"):
            return
        deadline = time.monotonic() + timeout_s
        while controlplane.node_gpus(self.api()) != n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Node did not advertise {n} GPUs within {timeout_s:.0f}s")
            time.sleep(0.2)

    def env(self) -> dict[str, str]:
        """Return ``os.environ`` plus KUBECONFIG and PATH pointing at this cluster and its tools."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def kubectl(
        self, *args: str, user: str | None = None, input: str | None = None,
        check: bool = False, timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the cluster and return the completed process (text mode).

        Parameters
        ----------
        args
            kubectl arguments.
        user
            A static token identity to act as (default: the admin client certificate).
        input
            Text for stdin (e.g. a manifest for ``apply -f -``).
        check
            Raise ``CalledProcessError`` on a non-zero exit.
        timeout
            Seconds before the command is killed.

        """
        kubeconfig = self.user_kubeconfig(user) if user else self.kubeconfig
        return subprocess.run(
            [find(self.bin_dir, "kubectl"), f"--kubeconfig={kubeconfig}", *args],
            input=input, capture_output=True, text=True, check=check, timeout=timeout,
            env=self.env(),
        )


def is_up(paths: Paths | None = None) -> bool:
    """Return whether a kubeconfig exists and the API server answers /readyz."""
    paths = paths or state_paths()
    return paths.kubeconfig.exists() and controlplane.readyz(paths)


def ensure_up(fake_gpus: int | None = None) -> Cluster:
    """Return a handle on the running devcluster, starting it first when it is not up.

    Parameters
    ----------
    fake_gpus
        ``nvidia.com/gpu`` capacity to advertise (None keeps the current setting).

    """
    paths = state_paths()
    if is_up(paths) and all(controlplane.running(paths).values()):
        handle = Cluster(paths, bin_dir(), started=False)
        if fake_gpus is not None:
            handle.set_fake_gpus(fake_gpus)
        return handle
    controlplane.up(paths, fake_gpus=fake_gpus)
    return Cluster(paths, bin_dir(), started=True)


def down() -> None:
    """Stop the devcluster of the current state directory."""
    controlplane.down(state_paths())
