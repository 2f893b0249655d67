"""NetworkPolicy enforcement: one iptables ruleset inside each pod's network namespace.

Every pod has its own network namespace, so a policy needs no host rules: a pod's ingress is
filtered in its own ``INPUT`` chain and its egress in its own ``OUTPUT`` chain. :func:`render`
is pure — pods, namespaces and policies in, an ``iptables-restore`` text out — and
:class:`Enforcer` keeps the objects the informers deliver and writes each pod's ruleset
atomically (``iptables-restore`` replaces the whole ``filter`` table) when it changes.

Semantics follow ``networking.k8s.io/v1``: a pod selected by no policy of a direction is open in
that direction; once one policy selects it for a direction, only what some rule of some
selecting policy allows passes. Always allowed, as every CNI does: loopback, replies of
allowed connections (conntrack), and ingress from the node's own address (kubelet probes; here
also the host-side operator and tests). Denied packets are rejected (TCP reset, ICMP port
unreachable), so a blocked connect fails at once rather than timing out.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("devcluster.nodeagent")

Obj = dict[str, Any]

#: Environment variable that turns enforcement off (``off``); read when the node agent starts.
ENV_SWITCH = "DEVCLUSTER_NETWORK_POLICY"


def enabled() -> bool:
    """Return whether NetworkPolicies are enforced (``DEVCLUSTER_NETWORK_POLICY`` is not off)."""
    return os.environ.get(ENV_SWITCH, "on").strip().lower() not in ("off", "0", "false", "no")


# ---- selectors ----------------------------------------------------------------------------------


def selects(selector: Obj | None, labels: dict[str, str]) -> bool:
    """Return whether a LabelSelector matches ``labels`` (an empty selector matches all)."""
    if selector is None:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


@dataclass(frozen=True)
class PodInfo:
    """What policy evaluation needs of a pod that has an address in a pod network namespace."""

    namespace: str
    name: str
    ip: str
    labels: dict[str, str]
    #: (name, protocol) -> port number, from the pod's containers' ``ports``
    ports: dict[tuple[str, str], int]

    @classmethod
    def of(cls, pod: Obj, ip: str) -> PodInfo:
        """Build from a core/v1 Pod and its address."""
        ports = {}
        for c in pod["spec"].get("containers", []) + pod["spec"].get("initContainers", []):
            for p in c.get("ports") or []:
                if p.get("name"):
                    ports[(p["name"], p.get("protocol", "TCP"))] = int(p["containerPort"])
        meta = pod["metadata"]
        return cls(meta["namespace"], meta["name"], ip, dict(meta.get("labels") or {}), ports)


# ---- rules --------------------------------------------------------------------------------------


def _policy_types(policy: Obj) -> list[str]:
    spec = policy.get("spec", {})
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]


def _peer_pods(peer: Obj, policy_ns: str, pods: Iterable[PodInfo],
               ns_labels: dict[str, dict[str, str]]) -> list[PodInfo]:
    """Return the pods a podSelector / namespaceSelector peer names."""
    out = []
    for p in pods:
        if "namespaceSelector" in peer:
            if p.namespace not in ns_labels or not selects(peer["namespaceSelector"],
                                                          ns_labels[p.namespace]):
                continue
        elif p.namespace != policy_ns:
            continue
        if selects(peer.get("podSelector"), p.labels):
            out.append(p)
    return out


def _in_block(ip: str, block: Obj) -> bool:
    addr = ipaddress.ip_address(ip)
    if addr.version != ipaddress.ip_network(block["cidr"], strict=False).version:
        return False
    if addr not in ipaddress.ip_network(block["cidr"], strict=False):
        return False
    return not any(addr in ipaddress.ip_network(e, strict=False) for e in block.get("except") or [])


def _port_matches(port: Obj, named_in: PodInfo | None) -> list[str]:
    """Return the iptables match fragments of one NetworkPolicyPort ([] when it can match nothing).

    A named port resolves against ``named_in`` (the destination pod); without one it matches
    nothing, as upstream (a named port never matches a non-pod address).
    """
    proto = port.get("protocol", "TCP")
    p = f"-p {proto.lower()}"
    value = port.get("port")
    if value is None:
        return [p]
    if isinstance(value, str) and not value.isdigit():
        if named_in is None or (value, proto) not in named_in.ports:
            return []
        return [f"{p} -m {proto.lower()} --dport {named_in.ports[(value, proto)]}"]
    end = port.get("endPort")
    rng = f"{int(value)}:{int(end)}" if end else str(int(value))
    return [f"{p} -m {proto.lower()} --dport {rng}"]


@dataclass
class _Chain:
    """Rules being built for one direction of one pod."""

    flag: str  # "-s" (ingress: match the source) or "-d" (egress: match the destination)
    main: str
    lines: list[str]
    chains: list[str]

    def block_chain(self) -> str:
        name = f"{self.main}-B{len(self.chains)}"
        self.chains.append(name)
        return name


def _named(port: Obj) -> bool:
    value = port.get("port")
    return isinstance(value, str) and not value.isdigit()


def _rule_lines(out: _Chain, rule: Obj, peers_key: str, policy_ns: str, target: PodInfo,
                ingress: bool, pods: list[PodInfo], ns_labels: dict[str, dict[str, str]]) -> None:
    """Append the ACCEPT lines of one ingress or egress rule to ``out``."""
    f = out.flag
    peers = rule.get(peers_key) or [None]  # None: every source / destination

    def add(chain: str, match: str, port: Obj, dest: PodInfo | None) -> None:
        frags = _port_matches(port, dest) if port else [""]
        for frag in frags:
            out.lines.append(" ".join(x for x in ("-A", chain, match, frag, "-j ACCEPT") if x))

    for peer in peers:
        if peer is not None and "ipBlock" not in peer:
            for p in _peer_pods(peer, policy_ns, pods, ns_labels):
                for port in rule.get("ports") or [{}]:
                    add(out.main, f"{f} {p.ip}/32", port, target if ingress else p)
            continue
        block = peer["ipBlock"] if peer is not None else None
        chain = out.main
        if block is not None and any(ingress or not _named(p) for p in rule.get("ports") or [{}]):
            chain = out.block_chain()
            for exc in block.get("except") or []:
                out.lines.append(f"-A {chain} {f} {exc} -j RETURN")
            out.lines.append(f"-A {out.main} {f} {block['cidr']} -j {chain}")
        for port in rule.get("ports") or [{}]:
            if ingress or not _named(port):
                add(chain, "", port, target)
                continue
            # A named port of an egress rule is a port of the destination pod: it can only
            # match pods, each at its own number.
            for p in pods:
                if block is None or _in_block(p.ip, block):
                    add(out.main, f"{f} {p.ip}/32", port, p)


#: The ruleset of a pod no policy selects (and of a fresh network namespace).
EMPTY = "\n".join(["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]",
                   ":OUTPUT ACCEPT [0:0]", "COMMIT", ""])


def render(target: PodInfo, pods: list[PodInfo], ns_labels: dict[str, dict[str, str]],
           policies: list[Obj], node_ip: str) -> str:
    """Return the ``iptables-restore`` input that enforces ``policies`` for pod ``target``.

    Parameters
    ----------
    target
        The pod whose network namespace gets the rules.
    pods
        Every pod with an address in a pod network namespace (the peers policies can name).
    ns_labels
        Labels of every namespace, by name.
    policies
        Every NetworkPolicy of the cluster.
    node_ip
        The node's address on the pod bridge; ingress from it is always allowed.

    """
    ing = _Chain("-s", "NETPOL-INGRESS", [], [])
    egr = _Chain("-d", "NETPOL-EGRESS", [], [])
    isolated = {"Ingress": False, "Egress": False}
    for pol in sorted(policies, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        ns = pol["metadata"]["namespace"]
        spec = pol.get("spec", {})
        if ns != target.namespace or not selects(spec.get("podSelector") or {}, target.labels):
            continue
        for ptype in _policy_types(pol):
            isolated[ptype] = True
            if ptype == "Ingress":
                for rule in spec.get("ingress") or []:
                    _rule_lines(ing, rule, "from", ns, target, True, pods, ns_labels)
            else:
                for rule in spec.get("egress") or []:
                    _rule_lines(egr, rule, "to", ns, target, False, pods, ns_labels)
    if not any(isolated.values()):
        return EMPTY
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    for chain in (ing, egr):
        lines += [f":{c} - [0:0]" for c in [chain.main, *chain.chains]]
    if isolated["Ingress"]:
        lines += [
            "-A INPUT -i lo -j ACCEPT",
            "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            f"-A INPUT -s {node_ip}/32 -j ACCEPT",
            f"-A INPUT -j {ing.main}",
            "-A INPUT -p tcp -j REJECT --reject-with tcp-reset",
            "-A INPUT -j REJECT --reject-with icmp-port-unreachable",
        ]
    if isolated["Egress"]:
        lines += [
            "-A OUTPUT -o lo -j ACCEPT",
            "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            f"-A OUTPUT -j {egr.main}",
            "-A OUTPUT -p tcp -j REJECT --reject-with tcp-reset",
            "-A OUTPUT -j REJECT --reject-with icmp-port-unreachable",
        ]
    lines += ing.lines + egr.lines
    return "\n".join([*lines, "COMMIT", ""])


# ---- the enforcer -------------------------------------------------------------------------------


class Enforcer:
    """Keep every local pod's ruleset equal to what the current policies say.

    Parameters
    ----------
    addresses
        Returns ``{pod uid: (network namespace, address)}`` of the pods that have a network
        namespace now (the agent's IP table: an address leaves it when its pod's namespace goes).
    node_ip
        The node's address on the bridge.

    """

    def __init__(self, addresses: Callable[[], dict[str, tuple[str, str]]], node_ip: str) -> None:
        self.addresses = addresses
        self.node_ip = node_ip
        self.pods: dict[str, Obj] = {}
        self.namespaces: dict[str, dict[str, str]] = {}
        self.policies: dict[str, Obj] = {}
        self.applied: dict[str, str] = {}  # netns -> ruleset text written there
        self.lock = threading.Lock()
        self.dirty = threading.Event()

    # informer callbacks
    def on_pod(self, ev: str, pod: Obj) -> None:
        """Record a pod's labels and ports."""
        uid = pod["metadata"]["uid"]
        old = self.pods.get(uid)
        if ev == "DELETED":
            self.pods.pop(uid, None)
        else:
            self.pods[uid] = pod
            if old is not None and _shape(old) == _shape(pod):
                return
        self.dirty.set()

    def on_namespace(self, ev: str, ns: Obj) -> None:
        """Record a namespace's labels."""
        name = ns["metadata"]["name"]
        if ev == "DELETED":
            self.namespaces.pop(name, None)
        else:
            self.namespaces[name] = dict(ns["metadata"].get("labels") or {})
        self.dirty.set()

    def on_policy(self, ev: str, pol: Obj) -> None:
        """Record a NetworkPolicy."""
        uid = pol["metadata"]["uid"]
        if ev == "DELETED":
            self.policies.pop(uid, None)
        else:
            self.policies[uid] = pol
        self.dirty.set()

    def sync(self) -> set[str]:
        """Recompute every local pod's ruleset and write those that changed.

        Returns
        -------
        set of str
            The pod UIDs whose rules could not be written (retried at the next sync).

        """
        with self.lock:
            self.dirty.clear()
            # Copies: the informer threads keep changing the originals (a dict copy is atomic).
            known, namespaces = dict(self.pods), dict(self.namespaces)
            policies = list(dict(self.policies).values())
            addrs = self.addresses()
            infos = {uid: PodInfo.of(known[uid], ip) for uid, (_, ip) in addrs.items()
                     if uid in known}
            pods = sorted(infos.values(), key=lambda p: p.ip)
            live, failed = set(), set()
            for uid, info in infos.items():
                netns = addrs[uid][0]
                live.add(netns)
                text = render(info, pods, namespaces, policies, self.node_ip)
                if self.applied.get(netns, EMPTY) == text:
                    continue  # (a new namespace starts with the empty ruleset)
                if apply(netns, text):
                    self.applied[netns] = text
                else:
                    failed.add(uid)
                    self.dirty.set()
            for gone in set(self.applied) - live:
                del self.applied[gone]
            return failed

    def run(self) -> None:
        """Sync whenever something changed (and every 10 s); retry failed writes after 1 s."""
        while True:
            self.dirty.wait(10.0)
            try:
                if self.sync():
                    time.sleep(1.0)
            except Exception:
                log.exception("Failed syncing NetworkPolicy rules")
                time.sleep(1.0)


def _shape(pod: Obj) -> tuple[Any, ...]:
    """Return the parts of a pod that policy rules depend on (not its status)."""
    return (pod["metadata"].get("labels"), [c.get("ports") for c in pod["spec"].get(
        "containers", [])], pod["spec"].get("nodeName"))


def apply(netns: str, text: str) -> bool:
    """Write ``text`` with ``iptables-restore`` in namespace ``netns``; return whether it did."""
    # -w: with the legacy backend the xtables lock is machine-wide (other clusters, CNIs).
    p = subprocess.run(["ip", "netns", "exec", netns, "iptables-restore", "-w", "5"], input=text,
                       capture_output=True, text=True)
    if p.returncode:
        if "Cannot open network namespace" not in p.stderr:
            log.warning("Failed writing NetworkPolicy rules in %s: %s", netns, p.stderr.strip())
        return False
    return True
