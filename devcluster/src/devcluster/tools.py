"""Find the Kubernetes binaries: ``KUBEBUILDER_ASSETS`` or the cache filled by build-tools.sh."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from devcluster.paths import REPO_ROOT

BUILD_SCRIPT = REPO_ROOT / "devcluster" / "scripts" / "build-tools.sh"


class ToolsError(Exception):
    """The binaries could not be found or built."""


def bin_dir(build: bool = True) -> Path:
    """Return the directory holding kube-apiserver, etcd, kubectl and friends.

    Parameters
    ----------
    build
        Run ``build-tools.sh`` (which builds what is missing, or just prints the cached
        directory); when False only ``KUBEBUILDER_ASSETS`` and ``DEVCLUSTER_BIN_DIR`` are read.

    Raises
    ------
    ToolsError
        When no directory with the binaries can be found.

    """
    for var in ("DEVCLUSTER_BIN_DIR", "KUBEBUILDER_ASSETS"):
        if os.environ.get(var):
            d = Path(os.environ[var])
            if not (d / "kube-apiserver").exists():
                raise ToolsError(f"{var}={d} holds no kube-apiserver")
            return d
    if not build:
        raise ToolsError("no binary directory is configured")
    p = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True)
    if p.returncode:
        raise ToolsError(f"build-tools.sh failed with exit code {p.returncode}")
    return Path(p.stdout.strip().splitlines()[-1])


def find(bindir: Path, name: str) -> str:
    """Return the path of binary ``name``: from ``bindir``, else from PATH (kubectl, helm).

    Raises
    ------
    ToolsError
        When neither has it.

    """
    if (bindir / name).exists():
        return str(bindir / name)
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d and (Path(d) / name).exists():
            return str(Path(d) / name)
    raise ToolsError(f"{name} is neither in {bindir} nor on PATH")
