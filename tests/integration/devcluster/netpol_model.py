"""A port of the upstream NetworkPolicy e2e model: pods x/a ... z/c, probes, truth tables.

Upstream (``test/e2e/network/netpol`` in kubernetes/kubernetes) starts three namespaces x, y, z
with pods a, b, c in each, every pod serving ports 80 and 81 over TCP and UDP with container ports
named ``serve-<port>-<proto>``; a test case creates policies and compares a reachability truth
table, measured by connect probes from every pod to every pod, with the expected one. Loopback
(a pod probing itself) is ignored, as upstream (``ignoreLoopback``).

Probes run here as they would in a pod: a thread of the test process enters the source pod's
network namespace (``setns``; the namespace of a thread is its own) and connects from there.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from dc_helpers import wait_for

from devcluster import network
from devcluster.kubeapi import ApiError, Client

Obj = dict[str, Any]

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
PORTS = (53, 80, 81)
CLONE_NEWNET = 0x40000000

SERVER = """
import socket, threading
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', port)); s.listen(64)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(b'ok')
        except OSError:  # the prober gave up first (a timeout under load): keep serving
            pass
        finally:
            c.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', port))
    while True:
        data, peer = s.recvfrom(64)
        try:
            s.sendto(data, peer)
        except OSError:
            pass
ts = [threading.Thread(target=f, args=(p,)) for p in PORTS for f in (tcp, udp)]
[t.start() for t in ts]
[t.join() for t in ts]
"""


def server_pod(pod: str, labels: dict[str, str] | None = None,
               ports: tuple[int, ...] = PORTS) -> Obj:
    """Return a pod answering TCP connects and echoing UDP on each of ``ports``."""
    named = [{"containerPort": p, "protocol": proto, "name": f"serve-{p}-{proto.lower()}"}
             for p in ports for proto in ("TCP", "UDP")]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod, "labels": labels if labels is not None else {"pod": pod}},
        "spec": {
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "serve", "image": "python:3.11",
                "command": ["python", "-c", f"PORTS = {ports!r}\n{SERVER}"],
                "ports": named,
                "readinessProbe": {"tcpSocket": {"port": ports[-1]}, "periodSeconds": 1},
            }],
        },
    }


_libc = ctypes.CDLL(None, use_errno=True)


def _probe_from(netns: str, targets: list[tuple[str, str]], port: int, proto: str,
                out: dict[tuple[str, str], bool], src: str) -> None:
    """Enter ``netns`` (this thread only) and connect to each target; record the outcomes."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns}")
    finally:
        os.close(fd)
    for dst, ip in targets:
        out[(src, dst)] = probe(ip, port, proto)


def probe_from(netns: str, ip: str, port: int, proto: str = "TCP") -> bool:
    """Return whether a connect from inside network namespace ``netns`` to ``ip:port`` works."""
    out: dict[tuple[str, str], bool] = {}
    t = threading.Thread(target=_probe_from, args=(netns, [("dst", ip)], port, proto, out, "src"))
    t.start()
    t.join()
    return out[("src", "dst")]


def probe(ip: str, port: int, proto: str, timeout: float = 1.0) -> bool:
    """Return whether a TCP connect (or a UDP echo) to ``ip:port`` succeeds."""
    kind = socket.SOCK_STREAM if proto == "TCP" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(timeout)
        try:
            s.connect((ip, port))
            if proto == "TCP":
                return True  # as upstream's agnhost connect: the handshake completed
            s.send(b"probe")
            return s.recv(16) == b"probe"
        except OSError:
            return False


@dataclass
class Reachability:
    """An expected (or measured) truth table over pod names ``"x/a"``."""

    pods: list[str]
    table: dict[tuple[str, str], bool] = field(default_factory=dict)

    @classmethod
    def all(cls, pods: list[str], value: bool = True) -> Reachability:
        """Return a table with every pair set to ``value`` (loopback excluded)."""
        return cls(pods, {(s, d): value for s in pods for d in pods if s != d})

    def expect(self, src: str | None, dst: str | None, value: bool) -> Reachability:
        """Set pairs matching ``src`` / ``dst``: ``"x/a"``, a namespace ``"x/"``, or None (any)."""
        for s, d in self.table:
            if _matches(src, s) and _matches(dst, d):
                self.table[(s, d)] = value
        return self

    def render(self, other: Reachability | None = None) -> str:
        """Return the table as upstream prints it (``X`` where it differs from ``other``)."""
        lines = ["-     " + " ".join(f"{d:5}" for d in self.pods)]
        for s in self.pods:
            row = []
            for d in self.pods:
                if s == d:
                    row.append("  .  ")
                    continue
                v = self.table[(s, d)]
                mark = "X" if other is not None and other.table[(s, d)] != v else " "
                row.append(f" {'1' if v else '0'}{mark}  ")
            lines.append(f"{s:5} " + " ".join(row))
        return "\n".join(lines)


def _matches(want: str | None, pod: str) -> bool:
    if want is None:
        return True
    return pod.startswith(want) if want.endswith("/") else pod == want


class Model:
    """Namespaces x, y, z with pods a, b, c, created once per test module."""

    def __init__(self, api: Client, suffix: str) -> None:
        self.api = api
        self.ns = {n: f"netpol-{n}-{suffix}" for n in NAMESPACES}
        self.pods = [f"{n}/{p}" for n in NAMESPACES for p in PODS]
        self.ips: dict[str, str] = {}
        self.netns: dict[str, str] = {}

    # ---- setup ------------------------------------------------------------------------------

    def create(self) -> None:
        """Create the namespaces and pods; wait until every server answers."""
        for n, name in self.ns.items():
            self.api.post("/api/v1/namespaces", {
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": {"ns": n}}})
        for name in self.ns.values():
            wait_for(f"ServiceAccount {name}/default",
                     lambda name=name: self.api.get(
                         f"/api/v1/namespaces/{name}/serviceaccounts/default"))
            for p in PODS:
                self.api.post(f"/api/v1/namespaces/{name}/pods", server_pod(p))
        for pod in self.pods:
            obj = wait_for(f"pod {pod} Ready", lambda pod=pod: self._ready(pod), timeout=60)
            self.ips[pod] = obj["status"]["podIP"]
            self.netns[pod] = network.netns_name(obj["metadata"]["uid"])

    def _ready(self, pod: str) -> Obj | None:
        obj: Obj = self.api.get(self.pod_path(pod))
        conds = {c["type"]: c["status"] for c in obj.get("status", {}).get("conditions", [])}
        return obj if conds.get("Ready") == "True" else None

    def delete(self) -> None:
        """Delete the namespaces (without waiting)."""
        for name in self.ns.values():
            with contextlib.suppress(ApiError):
                self.api.delete(f"/api/v1/namespaces/{name}")

    def pod_path(self, pod: str) -> str:
        """Return the API path of pod ``"x/a"``."""
        n, p = pod.split("/")
        return f"/api/v1/namespaces/{self.ns[n]}/pods/{p}"

    # ---- policies ---------------------------------------------------------------------------

    def policy_path(self, n: str, name: str = "") -> str:
        """Return the API path of NetworkPolicies in namespace ``n`` (x, y or z)."""
        base = f"/apis/networking.k8s.io/v1/namespaces/{self.ns[n]}/networkpolicies"
        return f"{base}/{name}" if name else base

    def create_policy(self, n: str, name: str, spec: Obj) -> Obj:
        """Create NetworkPolicy ``name`` in namespace ``n``."""
        body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name}, "spec": spec}
        obj: Obj = self.api.post(self.policy_path(n), body)
        return obj

    def update_policy(self, n: str, name: str, spec: Obj) -> None:
        """Replace the spec of NetworkPolicy ``name`` in namespace ``n``."""
        obj = self.api.get(self.policy_path(n, name))
        obj["spec"] = spec
        self.api.put(self.policy_path(n, name), obj)

    def clean_policies(self) -> None:
        """Delete every NetworkPolicy of x, y and z."""
        for n in NAMESPACES:
            for pol in self.api.get(self.policy_path(n))["items"]:
                self.api.delete(self.policy_path(n, pol["metadata"]["name"]))

    def ns_selector(self, *names: str) -> Obj:
        """Return a namespaceSelector on ``kubernetes.io/metadata.name`` (as upstream)."""
        if len(names) == 1:
            return {"matchLabels": {"kubernetes.io/metadata.name": self.ns[names[0]]}}
        return {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                      "values": [self.ns[n] for n in names]}]}

    # ---- probes -----------------------------------------------------------------------------

    def measure(self, port: int, proto: str) -> Reachability:
        """Probe every pod from every pod (one thread per source pod)."""
        out: dict[tuple[str, str], bool] = {}
        threads = []
        for src in self.pods:
            targets = [(d, self.ips[d]) for d in self.pods if d != src]
            t = threading.Thread(target=_probe_from,
                                 args=(self.netns[src], targets, port, proto, out, src))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        return Reachability(self.pods, out)

    def validate(self, port: int, proto: str, expected: Reachability,
                 timeout: float = 15.0) -> float:
        """Probe until the measured table equals ``expected``; return the seconds it took.

        Fails the test with both tables (``X`` marks a wrong cell) after ``timeout``.
        """
        t0 = time.monotonic()
        while True:
            got = self.measure(port, proto)
            if got.table == expected.table:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                pytest.fail(f"reachability on {port}/{proto} after {timeout:.0f}s:\n"
                            f"expected\n{expected.render()}\nmeasured\n{got.render(expected)}")
            time.sleep(0.2)

    def expect(self, *edits: tuple[str | None, str | None, bool]) -> Reachability:
        """Return all-reachable with ``edits`` (src, dst, value) applied in order."""
        r = Reachability.all(self.pods)
        for src, dst, value in edits:
            r.expect(src, dst, value)
        return r



