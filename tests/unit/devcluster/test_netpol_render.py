"""The NetworkPolicy enforcer's pure part: selectors and the iptables ruleset of one pod.

The integration tests (``tests/integration/devcluster/test_netpol.py``) measure the rules'
effect with real connections; these pin down how policies become rules.
"""

from __future__ import annotations

from typing import Any

import pytest

from devcluster.nodeagent.netpol import EMPTY, PodInfo, render, selects

NODE = "10.244.0.1"
XA = PodInfo("x", "a", "10.244.0.2", {"pod": "a"}, {("serve-80-tcp", "TCP"): 80})
XB = PodInfo("x", "b", "10.244.0.3", {"pod": "b"}, {("serve-80-tcp", "TCP"): 8080})
YA = PodInfo("y", "a", "10.244.0.4", {"pod": "a"}, {})
PODS = [XA, XB, YA]
NS = {"x": {"kubernetes.io/metadata.name": "x"}, "y": {"kubernetes.io/metadata.name": "y"}}


def pol(spec: dict[str, Any], ns: str = "x", name: str = "p") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, "uid": name}, "spec": spec}


def rules(target: PodInfo, *policies: dict[str, Any]) -> list[str]:
    return render(target, PODS, NS, list(policies), NODE).splitlines()


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
         {"a": "2"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "1"}, False),
    ],
    ids=["empty matches all", "matchLabels subset", "matchLabels differs", "In", "NotIn absent",
         "Exists absent", "DoesNotExist present"],
)
def test_label_selectors(selector: dict[str, Any], labels: dict[str, str], matches: bool) -> None:
    assert selects(selector, labels) is matches


def test_a_pod_no_policy_selects_gets_the_empty_ruleset() -> None:
    other = pol({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": []})
    in_y = pol({"podSelector": {}, "ingress": []}, ns="y")
    assert render(XA, PODS, NS, [other, in_y], NODE) == EMPTY


def test_default_deny_ingress_rejects_all_but_loopback_replies_and_the_node() -> None:
    r = rules(XA, pol({"podSelector": {}, "ingress": []}))
    assert "-A INPUT -i lo -j ACCEPT" in r
    assert "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT" in r
    assert f"-A INPUT -s {NODE}/32 -j ACCEPT" in r
    assert r.index("-A INPUT -j NETPOL-INGRESS") < r.index(
        "-A INPUT -j REJECT --reject-with icmp-port-unreachable")
    assert not [x for x in r if x.startswith("-A NETPOL-INGRESS")]
    assert not [x for x in r if x.startswith("-A OUTPUT")], "egress is not isolated"


def test_policy_types_default_to_egress_when_egress_rules_are_present() -> None:
    r = rules(XA, pol({"podSelector": {}, "egress": [{}]}))
    assert "-A OUTPUT -j NETPOL-EGRESS" in r and "-A INPUT -j NETPOL-INGRESS" in r
    assert "-A NETPOL-EGRESS -j ACCEPT" in r


def test_pod_and_namespace_selectors_in_one_peer_are_anded_in_two_peers_ored() -> None:
    both = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}},
            "podSelector": {"matchLabels": {"pod": "b"}}}
    assert not [x for x in rules(XA, pol({"podSelector": {}, "ingress": [{"from": [both]}]}))
                if x.startswith("-A NETPOL-INGRESS")]
    either = [{"namespaceSelector": both["namespaceSelector"]},
              {"podSelector": both["podSelector"]}]
    r = rules(XA, pol({"podSelector": {}, "ingress": [{"from": either}]}))
    assert f"-A NETPOL-INGRESS -s {YA.ip}/32 -j ACCEPT" in r
    assert f"-A NETPOL-INGRESS -s {XB.ip}/32 -j ACCEPT" in r


def test_named_ports_resolve_in_the_destination_pod() -> None:
    r = rules(XA, pol({"podSelector": POD_A_SEL, "policyTypes": ["Egress"],
                       "egress": [{"ports": [{"port": "serve-80-tcp"}]}]}))
    # x/b names 8080 "serve-80-tcp"; x/a names 80 so; y/a has no such port: no rule for it
    assert f"-A NETPOL-EGRESS -d {XB.ip}/32 -p tcp -m tcp --dport 8080 -j ACCEPT" in r
    assert f"-A NETPOL-EGRESS -d {XA.ip}/32 -p tcp -m tcp --dport 80 -j ACCEPT" in r
    assert not [x for x in r if YA.ip in x]
    ing = rules(XB, pol({"podSelector": {}, "ingress": [{"ports": [{"port": "serve-80-tcp"}]}]}))
    assert "-A NETPOL-INGRESS -p tcp -m tcp --dport 8080 -j ACCEPT" in ing


POD_A_SEL = {"matchLabels": {"pod": "a"}}


def test_ip_block_except_returns_before_the_accept() -> None:
    r = rules(XA, pol({"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.3/32"]}}],
         "ports": [{"port": 80, "protocol": "UDP"}, {"port": 9000, "endPort": 9010}]}]}))
    assert "-A NETPOL-EGRESS -d 10.0.0.0/8 -j NETPOL-EGRESS-B0" in r
    chain = [x for x in r if x.startswith("-A NETPOL-EGRESS-B0")]
    assert chain == [
        "-A NETPOL-EGRESS-B0 -d 10.244.0.3/32 -j RETURN",
        "-A NETPOL-EGRESS-B0 -p udp -m udp --dport 80 -j ACCEPT",
        "-A NETPOL-EGRESS-B0 -p tcp -m tcp --dport 9000:9010 -j ACCEPT",
    ]


def test_sctp_ports_never_open_tcp() -> None:
    r = rules(XA, pol({"podSelector": {}, "ingress": [{"ports": [{"port": 81,
                                                                   "protocol": "SCTP"}]}]}))
    assert "-A NETPOL-INGRESS -p sctp -m sctp --dport 81 -j ACCEPT" in r
    assert not [x for x in r if "-p tcp" in x and "NETPOL-INGRESS" in x]
