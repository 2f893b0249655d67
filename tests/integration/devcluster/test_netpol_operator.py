"""The operator's own NetworkPolicies, enforced by devcluster, confine what they claim to.

The policies are the operator's rendering (``render_network_policy`` of a PrivateTrainingJob,
``render_network_policies`` of a FederatedJob) applied as they are, and the pods carry the labels
the operator's pods carry (``render.common.labels``); each pod serves the ports its role opens.
Then real connects check both directions: what the job needs passes (the rest of the e2e suite
runs the jobs themselves with enforcement on), and a pod outside the job, or a job pod going where
its policy does not allow, is refused.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from dc_helpers import Kube, wait_for
from netpol_model import probe_from, server_pod

from devcluster import network
from devcluster.cluster import Cluster
from devcluster.paths import APISERVER_PORT, BRIDGE_IP
from ppml_operator.render import federated, trainer
from ppml_operator.render.common import RenderSettings, labels
from ppml_operator.render.federation import SUBMITTER, SUPERLINK, SUPERNODE
from ppml_runtime import contract as rc

Obj = dict[str, Any]
#: The labels the chart gives the operator's pods (charts/ppml-operator, default name).
OPERATOR_LABELS = {"app.kubernetes.io/name": "ppml-operator", "app.kubernetes.io/instance": "ppml",
                   "app.kubernetes.io/component": "operator"}
#: Flower's ServerAppIo port (9091: the SuperLink serves it only on 127.0.0.1 now, but a policy
#: must not admit it either) and the Control API's own port (9093, the submitter's only).
SERVERAPPIO_PORT, CONTROL_PORT = 9091, rc.SUPERLINK_CONTROL_PORT


def _job(kind: str, ns: str, name: str) -> Obj:
    job: Obj = {"apiVersion": "ppml.dev/v1alpha1", "kind": kind,
                "metadata": {"name": name, "namespace": ns, "uid": str(uuid.uuid4())}}
    if kind == "FederatedJob":  # the policies admit the SuperNodes of the job's clients
        job["spec"] = {"clients": [{"name": "a"}, {"name": "b"}]}
    return job


def _apply_policy(kube: Kube, policy: Obj) -> None:
    # No owner reference: the job object does not exist, and the garbage collector would
    # delete a child whose owner is missing.
    body = {**policy, "metadata": {k: v for k, v in policy["metadata"].items()
                                   if k != "ownerReferences"}}
    kube.create("networkpolicies", body, group="networking.k8s.io/v1")


class Pods:
    """Server pods of one namespace, by name: address and network namespace."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.ip: dict[str, str] = {}
        self.netns: dict[str, str] = {}

    def start(self, name: str, lbls: dict[str, str], ports: tuple[int, ...]) -> None:
        self.kube.create("pods", server_pod(name, lbls, ports))

    def wait(self) -> None:
        for p in self.kube.api.get(self.kube.path("pods"))["items"]:
            name = p["metadata"]["name"]

            def ready(name: str = name) -> Obj | None:
                obj = self.kube.pod(name)
                conds = {c["type"]: c["status"] for c in obj["status"].get("conditions", [])}
                return obj if conds.get("Ready") == "True" else None

            obj = wait_for(f"pod {name} Ready", ready, timeout=60)
            self.ip[name] = obj["status"]["podIP"]
            self.netns[name] = network.netns_name(obj["metadata"]["uid"])

    def reach(self, src: str, dst: str, port: int) -> bool:
        ip = BRIDGE_IP if dst == "node" else self.ip[dst]
        return probe_from(self.netns[src], ip, port)

    def table(self, pairs: list[tuple[str, str, int]]) -> dict[tuple[str, str, int], bool]:
        return {(s, d, port): self.reach(s, d, port) for s, d, port in pairs}


def _settled(pods: Pods, expected: dict[tuple[str, str, int], bool]) -> None:
    """Wait (a few seconds at most) until every probe gives the expected answer."""
    last: dict[tuple[str, str, int], bool] = {}

    def check() -> bool:
        nonlocal last
        last = pods.table(list(expected))
        return last == expected

    try:
        wait_for("the policies to take effect", check, timeout=15, every=0.3)
    except pytest.fail.Exception:
        wrong = {k: v for k, v in last.items() if v != expected[k]}
        pytest.fail(f"wrong reachability (src, dst, port) -> measured: {wrong}")


def test_trainer_pods_talk_to_each_other_and_nothing_else_reaches_them(
    devcluster: Cluster, kube: Kube
) -> None:
    job = _job("PrivateTrainingJob", kube.ns, "digits")
    other = _job("PrivateTrainingJob", kube.ns, "other")
    # This namespace stands for the operator's: only pods labelled as the operator's in the
    # operator's own namespace may scrape (render/trainer.py, operator_pods).
    settings = RenderSettings(operator_namespace=kube.ns)
    _apply_policy(kube, trainer.render_network_policy(job, settings))
    _apply_policy(kube, trainer.render_network_policy(other, settings))
    ports = (rc.RENDEZVOUS_PORT, rc.METRICS_PORT)
    pods = Pods(kube)
    pods.start("trainer-0", labels(job, trainer.COMPONENT), ports)
    pods.start("trainer-1", labels(job, trainer.COMPONENT), ports)
    pods.start("other-trainer", labels(other, trainer.COMPONENT), ports)
    pods.start("outsider", {"app": "curious"}, ports)
    pods.start("operator", OPERATOR_LABELS, ports)
    pods.wait()
    rdv, metrics = rc.RENDEZVOUS_PORT, rc.METRICS_PORT
    _settled(pods, {
        # the job's workers reach each other (DDP rendezvous and the collective's ports)
        ("trainer-1", "trainer-0", rdv): True,
        ("trainer-0", "trainer-1", rdv): True,
        # nothing outside the job reaches a trainer's rendezvous port...
        ("outsider", "trainer-0", rdv): False,
        ("other-trainer", "trainer-0", rdv): False,
        # ... and a trainer reaches nothing outside its job: not another pod, not another
        # job's trainer, not the API server on the node
        ("trainer-0", "outsider", rdv): False,
        ("trainer-0", "other-trainer", rdv): False,
        ("trainer-0", "node", APISERVER_PORT): False,
        # the metrics (loss on private records, no noise) are the operator's alone
        ("outsider", "trainer-0", metrics): False,
        ("other-trainer", "trainer-0", metrics): False,
        ("operator", "trainer-0", metrics): True,
        ("operator", "trainer-0", rdv): False,
        # a pod no policy selects is unaffected, and does reach the API server
        ("operator", "outsider", rdv): True,
        ("outsider", "node", APISERVER_PORT): True,
    })


def test_supernodes_reach_only_their_superlink_and_outsiders_reach_neither(
    devcluster: Cluster, kube: Kube
) -> None:
    job = _job("FederatedJob", kube.ns, "fed")
    other = _job("FederatedJob", kube.ns, "other")
    # This namespace stands for the operator's, as for the trainers above.
    settings = RenderSettings(operator_namespace=kube.ns)
    for policy in federated.render_network_policies(
            job, settings) + federated.render_network_policies(other, settings):
        _apply_policy(kube, policy)
    gauges = rc.FEDERATION_METRICS_PORT
    link_ports = (SERVERAPPIO_PORT, rc.SUPERLINK_PORT, CONTROL_PORT, gauges)
    node_ports = (rc.SUPERNODE_RUNTIME_PORT,)
    pods = Pods(kube)
    pods.start("superlink", labels(job, SUPERLINK), link_ports)
    pods.start("supernode-a", {**labels(job, SUPERNODE), "ppml.dev/client": "a"}, node_ports)
    pods.start("supernode-b", {**labels(job, SUPERNODE), "ppml.dev/client": "b"}, node_ports)
    pods.start("submitter", labels(job, SUBMITTER), node_ports)
    pods.start("other-superlink", labels(other, SUPERLINK), link_ports)
    pods.start("other-supernode", labels(other, SUPERNODE), node_ports)
    pods.start("outsider", {"app": "curious"}, link_ports)
    pods.start("operator", OPERATOR_LABELS, node_ports)
    pods.wait()
    fleet, runtime = rc.SUPERLINK_PORT, rc.SUPERNODE_RUNTIME_PORT
    _settled(pods, {
        # what the federation needs
        ("supernode-a", "superlink", fleet): True,
        ("supernode-b", "superlink", fleet): True,
        ("submitter", "superlink", CONTROL_PORT): True,
        # the submitter reaches only the Control API (the Fleet API is the SuperNodes')
        ("submitter", "superlink", fleet): False,
        # SuperNodes reach nothing else: not the SuperLink's other APIs, not each other,
        # not another job's SuperLink, not other pods, not the API server
        ("supernode-a", "superlink", CONTROL_PORT): False,
        ("supernode-a", "superlink", SERVERAPPIO_PORT): False,
        ("supernode-a", "supernode-b", runtime): False,
        ("supernode-a", "other-superlink", fleet): False,
        ("supernode-a", "outsider", fleet): False,
        ("supernode-a", "node", APISERVER_PORT): False,
        # nothing outside the job reaches the SuperLink or a SuperNode
        ("outsider", "superlink", fleet): False,
        ("outsider", "superlink", CONTROL_PORT): False,
        ("other-supernode", "superlink", fleet): False,
        ("outsider", "supernode-a", runtime): False,
        # the SuperLink itself reaches no pod and not the API server
        ("superlink", "supernode-a", runtime): False,
        ("superlink", "outsider", fleet): False,
        ("superlink", "node", APISERVER_PORT): False,
        # the ServerApp's live gauges are the operator's alone, and it reaches nothing else
        ("operator", "superlink", gauges): True,
        ("operator", "superlink", fleet): False,
        ("operator", "superlink", CONTROL_PORT): False,
        ("supernode-a", "superlink", gauges): False,
        ("submitter", "superlink", gauges): False,
        ("outsider", "superlink", gauges): False,
        # the other job's pair works, so the refusals above are the policies, not the pods
        ("other-supernode", "other-superlink", fleet): True,
        ("outsider", "node", APISERVER_PORT): True,
    })
