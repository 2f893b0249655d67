"""Service name resolution without DNS: each pod's ``/etc/hosts`` maps Service names to endpoints.

For every Service with ready endpoints the agent writes ``svc.ns``, ``svc.ns.svc`` and
``svc.ns.svc.cluster.local`` (plus plain ``svc`` for pods of the same namespace) to one ready
endpoint address: the lowest, so the choice is deterministic. An ``/etc/hosts`` line holds one
address per name, so a Service with several endpoints is not load-balanced: that is the limit of
this scheme. Endpoints carrying a hostname (pods with ``hostname`` and ``subdomain`` matching a
headless Service) also get ``host.svc.ns.svc.cluster.local`` and its shorter forms. There is no
kube-proxy: a client connects to the endpoint's port, so Service ``port`` should equal
``targetPort``.
"""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path
from typing import Any

DOMAIN = "svc.cluster.local"


def service_entries(
    services: dict[tuple[str, str], dict[str, Any]],
    slices: dict[tuple[str, str], dict[str, Any]],
) -> list[tuple[str, str, str]]:
    """Return ``(namespace, name, ip)`` per resolvable name; ``name`` without the namespace part.

    ``name`` is a relative name such as ``svc`` or ``host.svc``; the caller adds the suffixes.
    """
    ready: dict[tuple[str, str], list[str]] = {}
    hostnames: dict[tuple[str, str], dict[str, str]] = {}
    for (ns, _), sl in slices.items():
        svc = sl.get("metadata", {}).get("labels", {}).get("kubernetes.io/service-name")
        if not svc or (ns, svc) not in services:
            continue
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            addrs = ep.get("addresses") or []
            ready.setdefault((ns, svc), []).extend(addrs)
            if ep.get("hostname") and addrs:
                hostnames.setdefault((ns, svc), {})[ep["hostname"]] = addrs[0]
    out = []
    for (ns, svc), ips in sorted(ready.items()):
        if ips:
            out.append((ns, svc, min(ips, key=ipaddress.ip_address)))
        for host, ip in sorted(hostnames.get((ns, svc), {}).items()):
            out.append((ns, f"{host}.{svc}", ip))
    return out


def render(
    pod_ns: str, pod_ip: str, hostname: str, subdomain: str | None,
    entries: list[tuple[str, str, str]],
) -> str:
    """Return the ``/etc/hosts`` text of a pod in ``pod_ns``."""
    lines = [
        "# Kubernetes-managed hosts file (devcluster).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    own = [hostname]
    if subdomain:
        own.insert(0, f"{hostname}.{subdomain}.{pod_ns}.{DOMAIN}")
    lines.append(f"{pod_ip}\t{' '.join(own)}")
    seen = set(own)
    for ns, name, ip in entries:
        names = [f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.{DOMAIN}"]
        if ns == pod_ns:
            names.insert(0, name)
        names = [n for n in names if n not in seen]
        seen.update(names)
        if names:
            lines.append(f"{ip}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


class Hosts:
    """Keep every registered pod's hosts file in line with Services and EndpointSlices."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.slices: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[str, tuple[str, Path, str, str, str | None]] = {}
        self.written: dict[str, str] = {}

    def register(self, uid: str, ns: str, path: Path, ip: str, hostname: str,
                 subdomain: str | None) -> None:
        """Start maintaining the hosts file of pod ``uid`` (written immediately)."""
        with self.lock:
            self.pods[uid] = (ns, path, ip, hostname, subdomain)
            self._write_all()

    def unregister(self, uid: str) -> None:
        """Stop maintaining pod ``uid``'s hosts file."""
        with self.lock:
            self.pods.pop(uid, None)
            self.written.pop(uid, None)

    def on_service(self, kind: str, ev: str, obj: dict[str, Any]) -> None:
        """Informer callback for Services (``kind='svc'``) and EndpointSlices (``'slice'``)."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        store = self.services if kind == "svc" else self.slices
        with self.lock:
            if ev == "DELETED":
                store.pop(key, None)
            else:
                store[key] = obj
            self._write_all()

    def _write_all(self) -> None:
        entries = service_entries(self.services, self.slices)
        for uid, (ns, path, ip, hostname, subdomain) in self.pods.items():
            text = render(ns, ip, hostname, subdomain, entries)
            if self.written.get(uid) == text:
                continue
            # Rewrite in place: the file is bind-mounted, a rename would detach it.
            with open(path, "w") as f:
                f.write(text)
            path.chmod(0o644)
            self.written[uid] = text
