"""Rendered trainer children: names, labels, owner references, the restricted profile, config."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ppml_operator.api.v1alpha1 import PrivateTrainingJob
from ppml_operator.render.trainer import Paid, RenderSettings, render_children
from ppml_runtime import contract as rc

UID = "0000-uid"
PAID = Paid(noise_multiplier="1.1", sample_rate="0.04453723034098817", steps=23,
            delta="0.00001", epsilon="1.89263")


def make_job(workers: int = 1, **spec: Any) -> dict:
    runtime = {"workers": workers, **spec.pop("runtime", {})}
    return {
        "apiVersion": "ppml.dev/v1alpha1", "kind": "PrivateTrainingJob",
        "metadata": {"name": "digits", "namespace": "ns", "uid": UID, "generation": 1},
        "spec": {
            "budgetRef": {"name": "clinic"},
            "privacy": {"noiseMultiplier": "1.1", "delta": "1e-5"},
            "data": {"source": "Builtin", "builtin": {"name": "Digits"}, "numRecords": 1797},
            "model": {"architecture": "Mlp", "hiddenUnits": [32]},
            "training": {"epochs": 1, "batchSize": 64, "learningRate": "0.1"},
            "runtime": runtime,
            **spec,
        },
    }


def render(job: dict, settings: RenderSettings | None = None) -> dict[str, dict]:
    children = render_children(job, PrivateTrainingJob.model_validate(job), PAID,
                               settings or RenderSettings())
    return {c["kind"]: c for c in children}


def pod_spec(children: dict[str, dict]) -> dict:
    return children["Job"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("workers", [1, 4])
def test_every_child_is_labelled_named_and_owned_by_the_job(workers: int) -> None:
    children = render(make_job(workers))
    expected = {"ServiceAccount", "ConfigMap", "NetworkPolicy", "Job"} | (
        {"Service"} if workers > 1 else set())
    assert set(children) == expected
    for child in children.values():
        meta = child["metadata"]
        assert meta["namespace"] == "ns" and meta["name"].startswith("digits-")
        assert meta["labels"] == {
            "app.kubernetes.io/name": "private-training-job",
            "app.kubernetes.io/instance": "digits",
            "app.kubernetes.io/component": "trainer",
            "app.kubernetes.io/managed-by": "ppml-operator",
            "ppml.dev/job-name": "digits",
            "ppml.dev/job-namespace": "ns",
            "ppml.dev/job-uid": UID,
        }
        assert meta["ownerReferences"] == [{
            "apiVersion": "ppml.dev/v1alpha1", "kind": "PrivateTrainingJob", "name": "digits",
            "uid": UID, "controller": True, "blockOwnerDeletion": True,
        }]


def test_pods_meet_the_restricted_pod_security_standard() -> None:
    spec = pod_spec(render(make_job()))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert "hostNetwork" not in spec and "hostPID" not in spec
    for container in spec["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert sc.get("privileged") is not True
    assert all("hostPath" not in v for v in spec["volumes"])


def test_the_config_map_holds_exactly_what_was_paid_for() -> None:
    children = render(make_job())
    config = rc.TrainerConfig.model_validate(
        json.loads(children["ConfigMap"]["data"][rc.CONFIG_FILE]))
    assert config.privacy.noise_multiplier == "1.1"
    assert config.privacy.steps == 23 and config.privacy.charged_epsilon == "1.89263"
    assert config.data.num_records == 1437  # the training split: 1797 - ceil(1797 * 0.2)
    assert config.job.uid == UID and config.model.hidden_units == [32]


def test_the_trainer_job_runs_one_indexed_pod_per_worker_with_the_rendezvous() -> None:
    children = render(make_job(3, backoffLimit=2, activeDeadlineSeconds=600))
    job = children["Job"]["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == 3
    assert job["backoffLimit"] == 2 and job["activeDeadlineSeconds"] == 600
    rules = job["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob"
    assert rules[0]["onExitCodes"]["values"] == [rc.EXIT_INVALID_CONFIG, rc.EXIT_DATA_MISMATCH]
    spec = pod_spec(children)
    assert spec["subdomain"] == "digits-workers" and spec["restartPolicy"] == "Never"
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["WORLD_SIZE"]["value"] == "3"
    assert env["MASTER_ADDR"]["value"] == "digits-trainer-0.digits-workers"
    assert "job-completion-index" in env["RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert children["Service"]["spec"]["clusterIP"] == "None"


def test_resources_node_selector_tolerations_and_image_come_from_the_spec() -> None:
    job = make_job(runtime={
        "image": "example.org/runtime:1",
        "resources": {"limits": {"nvidia.com/gpu": 1}},
        "nodeSelector": {"gpu": "h100"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    })
    spec = pod_spec(render(job))
    container = spec["containers"][0]
    assert container["image"] == "example.org/runtime:1"
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert spec["nodeSelector"] == {"gpu": "h100"}
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_the_trainer_command_can_be_replaced_by_an_operator_setting() -> None:
    settings = RenderSettings(command=("python", "-c", "pass"), extra_env=(("X", "1"),))
    container = pod_spec(render(make_job(), settings))["containers"][0]
    assert container["command"] == ["python", "-c", "pass"]
    assert {"name": "X", "value": "1"} in container["env"]


def test_the_network_policy_admits_only_the_jobs_own_pods_and_the_operators_scrape() -> None:
    policy = render(make_job())["NetworkPolicy"]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    own = policy["podSelector"]["matchLabels"]
    assert own["ppml.dev/job-uid"] == UID
    assert {"from": [{"podSelector": {"matchLabels": own}}]} in policy["ingress"]
    # The metrics (batch loss on private records, no noise) are for the operator's pods only,
    # matched by the chart's labels in the operator's namespace (a pod labelled alike in an
    # analyst's namespace is not admitted); no rule opens a port to every pod.
    metrics = {"from": [{"namespaceSelector": {"matchLabels": {
                             "kubernetes.io/metadata.name": "ppml-system"}},
                         "podSelector": {"matchLabels": {
                             "app.kubernetes.io/name": "ppml-operator",
                             "app.kubernetes.io/component": "operator"}}}],
               "ports": [{"protocol": "TCP", "port": rc.METRICS_PORT}]}
    assert metrics in policy["ingress"]
    assert all(rule.get("from") for rule in policy["ingress"])


def test_the_trainer_reaches_only_its_peers_and_the_cluster_dns() -> None:
    """No egress rule names a destination the job did not choose: a pod touching private
    records cannot send them anywhere but to its own workers (and ask the cluster's DNS)."""
    egress = render(make_job())["NetworkPolicy"]["spec"]["egress"]
    own = render(make_job())["NetworkPolicy"]["spec"]["podSelector"]
    assert {"to": [{"podSelector": own}]} in egress
    dns = [rule for rule in egress if rule.get("ports")]
    assert dns == [{"to": [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]
    assert all(rule.get("to") for rule in egress)  # no rule open to every destination
