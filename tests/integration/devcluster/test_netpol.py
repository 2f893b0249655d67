"""NetworkPolicy enforcement, checked against cases of the upstream Kubernetes e2e suite.

Each case is ported from ``test/e2e/network/netpol/network_policy.go`` (kubernetes/kubernetes,
the ``Netpol`` SIG-Network suite; its ``It`` text is the case id here): the same pods x/a ... z/c,
the same policies, the same expected truth table, measured with real TCP and UDP connects
between the pods' network namespaces. Upstream builds each case's table from "all reachable"
with a few ``ExpectPeer`` / ``ExpectAllIngress`` / ``ExpectAllEgress`` edits; so do these.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from dc_helpers import pod_manifest, terminated, wait_for
from netpol_model import Model

from devcluster.cluster import Cluster

Obj = dict[str, Any]
POD_A = {"matchLabels": {"pod": "a"}}


@pytest.fixture(scope="module")
def model(devcluster: Cluster) -> Iterator[Model]:
    """Namespaces x, y, z with server pods a, b, c, shared by the module's cases."""
    m = Model(devcluster.api(), secrets.token_hex(3))
    try:
        m.create()
        yield m
    finally:
        m.delete()


@pytest.fixture
def k8s(model: Model) -> Iterator[Model]:
    """The model with every pod reaching every pod again, and no policies, after the case."""
    yield model
    model.clean_policies()
    model.validate(80, "TCP", model.expect())


def test_no_policies_everything_reaches_everything_over_tcp_and_udp(k8s: Model) -> None:
    for proto in ("TCP", "UDP"):
        k8s.validate(80, proto, k8s.expect())


def test_should_support_a_default_deny_ingress_policy(k8s: Model) -> None:
    k8s.create_policy("x", "deny-ingress", {"podSelector": {}, "ingress": []})
    expected = k8s.expect((None, "x/", False))
    k8s.validate(80, "TCP", expected)
    k8s.validate(80, "UDP", expected)


def test_should_support_a_default_deny_all_policy(k8s: Model) -> None:
    k8s.create_policy("x", "deny-all", {"podSelector": {}, "ingress": [], "egress": [],
                                        "policyTypes": ["Ingress", "Egress"]})
    expected = k8s.expect((None, "x/", False), ("x/", None, False))
    k8s.validate(80, "TCP", expected)
    k8s.validate(81, "UDP", expected)


def test_should_deny_egress_from_all_pods_in_a_namespace(k8s: Model) -> None:
    k8s.create_policy("x", "deny-egress-ns-x", {"podSelector": {}, "policyTypes": ["Egress"]})
    k8s.validate(80, "TCP", k8s.expect(("x/", None, False)))


def test_should_enforce_policy_to_allow_traffic_from_pods_within_server_namespace_based_on_podselector(  # noqa: E501
    k8s: Model,
) -> None:
    k8s.create_policy("x", "x-a-allows-x-b", {
        "podSelector": POD_A,
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]})
    k8s.validate(80, "TCP", k8s.expect((None, "x/a", False), ("x/b", "x/a", True)))


def test_should_enforce_policy_to_allow_traffic_only_from_a_different_namespace_based_on_namespaceselector(  # noqa: E501
    k8s: Model,
) -> None:
    k8s.create_policy("x", "allow-client-a-via-ns-selector", {
        "podSelector": POD_A, "ingress": [{"from": [{"namespaceSelector": k8s.ns_selector("y")}]}]})
    k8s.validate(80, "TCP", k8s.expect(("x/", "x/a", False), ("z/", "x/a", False)))


def test_should_enforce_policy_based_on_podselector_or_namespaceselector(k8s: Model) -> None:
    not_x = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                   "values": [k8s.ns["x"]]}]}
    # Two peers in one rule: either matches (OR).
    k8s.create_policy("x", "allow-ns-y-match-selector", {
        "podSelector": POD_A,
        "ingress": [{"from": [{"namespaceSelector": not_x},
                              {"podSelector": {"matchLabels": {"pod": "b"}}}]}]})
    k8s.validate(80, "TCP", k8s.expect(("x/c", "x/a", False)))


def test_should_enforce_policy_based_on_podselector_and_namespaceselector(k8s: Model) -> None:
    not_x = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                   "values": [k8s.ns["x"]]}]}
    # One peer with both selectors: both must match (AND).
    k8s.create_policy("x", "allow-ns-y-podselector-and-nsselector", {
        "podSelector": POD_A,
        "ingress": [{"from": [{"namespaceSelector": not_x,
                               "podSelector": {"matchLabels": {"pod": "b"}}}]}]})
    k8s.validate(80, "TCP", k8s.expect((None, "x/a", False), ("y/b", "x/a", True),
                                       ("z/b", "x/a", True)))


def test_should_enforce_policy_based_on_multiple_podselectors_and_namespaceselectors(
    k8s: Model,
) -> None:
    not_x = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                   "values": [k8s.ns["x"]]}]}
    b_or_c = {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]}
    k8s.create_policy("x", "allow-ns-y-z-pod-b-c", {
        "podSelector": POD_A,
        "ingress": [{"from": [{"namespaceSelector": not_x, "podSelector": b_or_c}]}]})
    k8s.validate(80, "TCP", k8s.expect(("x/", "x/a", False), ("y/a", "x/a", False),
                                       ("z/a", "x/a", False)))


def test_should_enforce_policy_based_on_ports(k8s: Model) -> None:
    k8s.create_policy("x", "allow-client-a-via-ns-selector", {
        "podSelector": POD_A,
        "ingress": [{"from": [{"namespaceSelector": k8s.ns_selector("y")}],
                     "ports": [{"port": 81, "protocol": "TCP"}]}]})
    k8s.validate(81, "TCP", k8s.expect(("x/", "x/a", False), ("z/", "x/a", False)))
    k8s.validate(80, "TCP", k8s.expect((None, "x/a", False)))


def test_should_allow_ingress_access_on_one_named_port(k8s: Model) -> None:
    k8s.create_policy("x", "allow-all", {
        "podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]})
    k8s.validate(81, "TCP", k8s.expect())
    k8s.validate(80, "TCP", k8s.expect((None, "x/", False)))


def test_should_allow_egress_access_on_one_named_port(k8s: Model) -> None:
    k8s.create_policy("x", "allow-egress", {
        "podSelector": {}, "egress": [{"ports": [{"port": "serve-80-tcp"}]}],
        "policyTypes": ["Egress"]})
    k8s.validate(80, "TCP", k8s.expect())
    k8s.validate(81, "TCP", k8s.expect(("x/", None, False)))


def test_should_enforce_ingress_policy_allowing_any_port_traffic_to_a_server_on_a_specific_protocol(
    k8s: Model,
) -> None:
    k8s.create_policy("x", "allow-ingress-by-proto", {
        "podSelector": POD_A, "ingress": [{"ports": [{"protocol": "TCP"}]}]})
    k8s.validate(80, "TCP", k8s.expect())
    k8s.validate(80, "UDP", k8s.expect((None, "x/a", False)))


def test_should_work_with_ingress_egress_specified_together(k8s: Model) -> None:
    k8s.create_policy("x", "allow-client-a-via-pod-selector", {
        "podSelector": POD_A,
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
        "egress": [{"ports": [{"port": 80}]}],
        "policyTypes": ["Egress", "Ingress"]})
    k8s.validate(80, "TCP", k8s.expect((None, "x/a", False), ("x/b", "x/a", True)))
    k8s.validate(81, "TCP", k8s.expect((None, "x/a", False), ("x/a", None, False),
                                       ("x/b", "x/a", True)))


def test_should_support_denying_of_egress_traffic_on_the_client_side_even_if_the_server_explicitly_allows_this_traffic(  # noqa: E501
    k8s: Model,
) -> None:
    k8s.create_policy("x", "allow-to-ns-y-pod-a", {
        "podSelector": POD_A, "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": k8s.ns_selector("y"), "podSelector": POD_A}]}]})
    from_xa = {"from": [{"namespaceSelector": k8s.ns_selector("x"), "podSelector": POD_A}]}
    k8s.create_policy("y", "allow-from-xa-on-ya-match-selector",
                      {"podSelector": POD_A, "ingress": [from_xa]})
    k8s.create_policy("y", "allow-from-xa-on-yb-match-selector",
                      {"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [from_xa]})
    k8s.validate(80, "TCP", k8s.expect(("x/a", None, False), (None, "y/a", False),
                                       ("x/a", "y/a", True), (None, "y/b", False)))


def test_should_allow_egress_access_to_server_in_cidr_block(k8s: Model) -> None:
    k8s.create_policy("x", "allow-client-a-via-cidr-egress-rule", {
        "podSelector": POD_A, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": f"{k8s.ips['y/b']}/32"}}]}]})
    k8s.validate(80, "TCP", k8s.expect(("x/a", None, False), ("x/a", "y/b", True)))


def test_should_enforce_except_clause_while_egress_access_to_server_in_cidr_block(
    k8s: Model,
) -> None:
    # upstream's makeLargeCIDRForIP: a /4 around the pod's address
    large = ".".join([str(int(k8s.ips["x/b"].split(".")[0]) & 0xF0), "0", "0", "0"]) + "/4"
    spec = {"podSelector": POD_A, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": large,
                                            "except": [f"{k8s.ips['x/b']}/32"]}}]}]}
    k8s.create_policy("x", "allow-client-a-via-cidr-egress-rule", spec)
    k8s.validate(80, "TCP", k8s.expect(("x/a", "x/b", False)))
    # "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed"
    k8s.update_policy("x", "allow-client-a-via-cidr-egress-rule", {
        "podSelector": POD_A, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": f"{k8s.ips['x/b']}/32"}}]}]})
    k8s.validate(80, "TCP", k8s.expect(("x/a", None, False), ("x/a", "x/b", True)))


def test_egress_limited_to_dns_reaches_port_53_only(k8s: Model) -> None:
    # The shape of the DNS egress rule upstream policies (and the operator's) carry:
    # UDP and TCP port 53 to anywhere, nothing else.
    k8s.create_policy("x", "allow-dns-only", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]})
    for proto in ("UDP", "TCP"):
        k8s.validate(53, proto, k8s.expect())
        k8s.validate(80, proto, k8s.expect(("x/", None, False)))


def test_should_not_mistakenly_treat_protocol_sctp_as_protocol_tcp(k8s: Model) -> None:
    k8s.create_policy("x", "deny-ingress", {"podSelector": {}, "ingress": []})
    k8s.create_policy("x", "allow-only-sctp-ingress-on-port-81", {
        "podSelector": POD_A, "ingress": [{"ports": [{"port": 81, "protocol": "SCTP"}]}]})
    k8s.validate(81, "TCP", k8s.expect((None, "x/", False)))


def test_should_enforce_multiple_ingress_policies_with_ingress_allow_all_policy_taking_precedence(
    k8s: Model,
) -> None:
    k8s.create_policy("x", "allow-ingress-port-80",
                      {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]})
    k8s.validate(81, "TCP", k8s.expect((None, "x/", False)))
    k8s.create_policy("x", "allow-ingress", {"podSelector": {}, "ingress": [{}]})
    k8s.validate(81, "TCP", k8s.expect())


# ---- updates and deletions ----------------------------------------------------------------------


def test_should_enforce_updated_policy(k8s: Model) -> None:
    k8s.create_policy("x", "allow-all-mutate-to-deny-all", {"podSelector": {}, "ingress": [{}]})
    k8s.validate(81, "TCP", k8s.expect())
    k8s.update_policy("x", "allow-all-mutate-to-deny-all", {"podSelector": {}, "ingress": []})
    seconds = k8s.validate(81, "TCP", k8s.expect((None, "x/", False)))
    print(f"the update took effect within {seconds:.2f}s")
    assert seconds < 5, f"the update took {seconds:.1f}s to take effect"


def test_should_allow_ingress_access_from_updated_namespace(k8s: Model) -> None:
    k8s.create_policy("x", "allow-client-a-via-ns-selector", {
        "podSelector": POD_A,
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns2": "updated"}}}]}]})
    k8s.validate(80, "TCP", k8s.expect((None, "x/a", False)))
    path = f"/api/v1/namespaces/{k8s.ns['y']}"
    k8s.api.patch(path, {"metadata": {"labels": {"ns2": "updated"}}})
    try:
        k8s.validate(80, "TCP", k8s.expect((None, "x/a", False), ("y/", None, True)))
    finally:
        k8s.api.patch(path, {"metadata": {"labels": {"ns2": None}}})


def test_should_allow_ingress_access_from_updated_pod(k8s: Model) -> None:
    k8s.create_policy("x", "allow-client-a-via-pod-selector", {
        "podSelector": POD_A,
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b", "pod2": "updated"}}}]}]})
    k8s.validate(80, "TCP", k8s.expect((None, "x/a", False)))
    k8s.api.patch(k8s.pod_path("x/b"), {"metadata": {"labels": {"pod2": "updated"}}})
    try:
        k8s.validate(80, "TCP", k8s.expect((None, "x/a", False), ("x/b", "x/a", True)))
    finally:
        k8s.api.patch(k8s.pod_path("x/b"), {"metadata": {"labels": {"pod2": None}}})


def test_should_deny_ingress_access_to_updated_pod(k8s: Model) -> None:
    k8s.create_policy("x", "deny-ingress-via-label-selector",
                      {"podSelector": {"matchLabels": {"target": "isolated"}}, "ingress": []})
    k8s.validate(80, "TCP", k8s.expect())
    k8s.api.patch(k8s.pod_path("x/a"), {"metadata": {"labels": {"target": "isolated"}}})
    try:
        k8s.validate(80, "TCP", k8s.expect((None, "x/a", False)))
    finally:
        k8s.api.patch(k8s.pod_path("x/a"), {"metadata": {"labels": {"target": None}}})


def test_should_stop_enforcing_policies_after_they_are_deleted(k8s: Model) -> None:
    k8s.create_policy("x", "deny-all", {"podSelector": {}, "ingress": [], "egress": [],
                                        "policyTypes": ["Ingress", "Egress"]})
    k8s.validate(80, "TCP", k8s.expect(("x/", None, False), (None, "x/", False)))
    k8s.clean_policies()
    seconds = k8s.validate(80, "TCP", k8s.expect())
    print(f"the deletion took effect within {seconds:.2f}s")
    assert seconds < 5, f"the deletion took {seconds:.1f}s to take effect"


def test_a_new_pod_is_confined_from_its_first_packet(k8s: Model) -> None:
    # The agent writes a pod's rules before it starts the pod's processes: a pod that
    # connects at once, selected by a deny-egress policy, never gets through.
    k8s.create_policy("x", "deny-egress-late", {
        "podSelector": {"matchLabels": {"pod": "late"}}, "policyTypes": ["Egress"]})
    code = (
        "import socket\n"
        "s = socket.socket(); s.settimeout(2)\n"
        f"rc = s.connect_ex(({k8s.ips['y/a']!r}, 80))\n"
        "open('/dev/termination-log', 'w').write('connected' if rc == 0 else 'refused')\n"
    )
    pod = pod_manifest("late", code, labels={"pod": "late"})
    path = f"/api/v1/namespaces/{k8s.ns['x']}/pods"
    k8s.api.post(path, pod)
    done = wait_for("pod x/late to finish", lambda: _finished(k8s.api.get(f"{path}/late")))
    assert terminated(done)["message"] == "refused"
    # and the same pod without the policy's label connects
    k8s.api.post(path, {**pod, "metadata": {"name": "early", "labels": {"pod": "early"}}})
    done = wait_for("pod x/early to finish", lambda: _finished(k8s.api.get(f"{path}/early")))
    assert terminated(done)["message"] == "connected"


def _finished(pod: Obj) -> Obj | None:
    return pod if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") else None
