"""Pod networking: a host bridge with a pod subnet, one network namespace per pod.

The bridge ``ppml0`` holds ``10.244.0.1/24``; each pod gets a namespace ``dcpod-<uid>`` joined to
the bridge by a veth pair and one address from the subnet. Pods have no default route, so their
traffic never leaves this machine; the host reaches pod addresses through the bridge.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import time

from devcluster.paths import BRIDGE, BRIDGE_IP, INSTANCE, POD_PREFIX_LEN

NETNS_PREFIX = f"dcpod{INSTANCE}-" if INSTANCE else "dcpod-"


class NetworkError(Exception):
    """An ``ip`` command failed."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and p.returncode:
        raise NetworkError(f"ip {' '.join(args)} failed: {p.stderr.strip()}")
    return p


def ensure_bridge() -> None:
    """Create the bridge with its address (idempotent)."""
    if _ip("link", "show", BRIDGE, check=False).returncode:
        _ip("link", "add", BRIDGE, "type", "bridge")
    addrs = _ip("-o", "addr", "show", "dev", BRIDGE).stdout
    if f"{BRIDGE_IP}/" not in addrs:
        _ip("addr", "add", f"{BRIDGE_IP}/{POD_PREFIX_LEN}", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def delete_bridge() -> None:
    """Remove the bridge (and so its address)."""
    _ip("link", "del", BRIDGE, check=False)


def pod_ips() -> list[str]:
    """Return every usable pod address of the subnet (the bridge has the first)."""
    net = ipaddress.ip_network(f"{BRIDGE_IP}/{POD_PREFIX_LEN}", strict=False)
    return [str(h) for h in net.hosts() if str(h) != BRIDGE_IP]


def netns_name(pod_uid: str) -> str:
    """Return the network namespace name of a pod."""
    return NETNS_PREFIX + pod_uid.replace("-", "")[:10]


def create_pod_netns(name: str, ip: str) -> None:
    """Create namespace ``name`` with ``eth0`` at ``ip`` joined to the bridge.

    Parameters
    ----------
    name
        Namespace name (from :func:`netns_name`).
    ip
        The pod address inside the bridge subnet.

    """
    delete_pod_netns(name)
    host_if = "dcv" + name[len(NETNS_PREFIX):][:11]
    _ip("link", "del", host_if, check=False)
    _ip("netns", "add", name)
    _ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", name)
    _ip("link", "set", host_if, "master", BRIDGE, "up")
    _ip("-n", name, "addr", "add", f"{ip}/{POD_PREFIX_LEN}", "dev", "eth0")
    _ip("-n", name, "link", "set", "eth0", "up")
    _ip("-n", name, "link", "set", "lo", "up")


def netns_pids(name: str) -> list[int]:
    """Return the pids of processes living in namespace ``name``."""
    out = _ip("netns", "pids", name, check=False).stdout
    return [int(x) for x in out.split()]


def kill_netns_processes(name: str, grace_s: float = 0.0) -> None:
    """SIGTERM (then after ``grace_s`` SIGKILL) every process in namespace ``name``."""
    pids = netns_pids(name)
    if grace_s > 0 and pids:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and netns_pids(name):
            time.sleep(0.1)
    for _ in range(50):
        pids = netns_pids(name)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def delete_pod_netns(name: str) -> None:
    """Kill what runs in namespace ``name`` and delete it (its veth pair goes with it)."""
    if name not in list_pod_netns():
        return
    kill_netns_processes(name)
    _ip("netns", "del", name, check=False)


def list_pod_netns() -> list[str]:
    """Return the names of all pod namespaces devcluster created."""
    out = _ip("netns", "list", check=False).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(NETNS_PREFIX)]


#: Debian packages the NetworkPolicy enforcer needs, by the command that shows they are there.
POLICY_PACKAGES = {"iptables-restore": "iptables", "ipset": "ipset"}


def ensure_policy_tools() -> None:
    """Install ``iptables`` and ``ipset`` from Debian when missing (as ``.ci/run`` does for ``ip``).

    Raises
    ------
    NetworkError
        When they are missing and cannot be installed (not root, no ``apt-get``, or it failed).

    """
    missing = sorted({pkg for cmd, pkg in POLICY_PACKAGES.items() if shutil.which(cmd) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise NetworkError(
            f"NetworkPolicy enforcement needs {', '.join(missing)}: install them, or set "
            "DEVCLUSTER_NETWORK_POLICY=off to run without enforcement"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        p = subprocess.run(argv, capture_output=True, text=True, env=env)
        if p.returncode:
            raise NetworkError(f"{' '.join(argv)} failed: {p.stderr.strip()[-500:]}")
