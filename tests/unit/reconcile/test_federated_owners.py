"""A FederatedJob whose silos are data owners: clients[].datasetRef, resolved, charged, placed.

Each silo names a PrivateDataset in its owner's namespace; the dataset's policy admits or
refuses it (the one policy a PrivateTrainingJob meets), its budget pays, its SuperNode and its
own key Secret run there, and the server side runs in the operator's namespace on the pinned
runtime image.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from ppml_operator.api.v1alpha1 import FederatedJob
from ppml_operator.reconcile import dataset, federated
from ppml_operator.reconcile.plan import Deletion
from ppml_operator.render import federated as rf
from ppml_operator.render.common import RenderSettings
from ppml_testing.fedjobs import UID, digits_shard, make_fedjob
from ppml_testing.objects import observed

NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
OPERATOR_NS = "ppml-system"
SETTINGS = RenderSettings(image="ghcr.io/ppml-dev/ppml-runtime@sha256:" + "b" * 64,
                          operator_namespace=OPERATOR_NS)
Obj = dict[str, Any]


def clinic_dataset(clinic: str, index: int, **access: Any) -> Obj:
    """Clinic ``clinic``'s PrivateDataset: shard ``index`` of 2 of Digits, granting ml-team."""
    return {
        "kind": "PrivateDataset",
        "metadata": {"name": "digits", "namespace": clinic},
        "spec": {"budgetRef": {"name": "records"}, "data": digits_shard(index, 2),
                 "access": {"namespaces": ["ml-team"], **access}},
    }


DATASETS = {("clinic-a", "digits"): clinic_dataset("clinic-a", 0),
            ("clinic-b", "digits"): clinic_dataset("clinic-b", 1)}


def owners_job(mode: str = "Central", **spec: Any) -> Obj:
    """ml-team's federation over the two clinics' datasets."""
    builder = make_fedjob("fed").clients(2)
    for i, clinic in enumerate(("clinic-a", "clinic-b")):
        builder.spec["clients"][i] = {"name": clinic,
                                      "datasetRef": {"namespace": clinic, "name": "digits"}}
    if mode == "Central":
        builder.spec["privacy"] = {"mode": "Central", "noiseMultiplier": "1.0", "delta": "1e-3"}
    elif mode == "Local":
        builder.spec["privacy"] = {"mode": "Local", "noiseMultiplier": "1.1", "delta": "1e-5"}
    builder.with_spec(**spec)
    job = builder.obj()
    job["metadata"]["namespace"] = "ml-team"
    return job


def resolved(job: Obj, datasets: dict[tuple[str, str], Obj | None] | None = None
             ) -> dataset.Resolved:
    out = dataset.resolve_federation(job, DATASETS if datasets is None else datasets,
                                     operator_namespace=OPERATOR_NS)
    assert isinstance(out, dataset.Resolved), out
    return out


def test_the_api_takes_exactly_one_of_data_and_dataset_ref_and_no_budget_beside_it() -> None:
    FederatedJob.model_validate(owners_job())
    both = owners_job()
    both["spec"]["clients"][0]["data"] = digits_shard(0, 2)
    with pytest.raises(ValueError, match="exactly one of data"):
        FederatedJob.model_validate(both)
    budget = owners_job()
    budget["spec"]["clients"][0]["budgetRef"] = {"name": "cheap"}
    with pytest.raises(ValueError, match="budgetRef cannot be set with datasetRef"):
        FederatedJob.model_validate(budget)
    job_budget = owners_job(budgetRef={"name": "cheap"})
    with pytest.raises(ValueError, match="budgetRef cannot be set when the clients"):
        FederatedJob.model_validate(job_budget)
    mixed = owners_job(mode="None")
    mixed["spec"]["clients"][1] = {"name": "own", "data": digits_shard(1, 2)}
    with pytest.raises(ValueError, match="either every client names a datasetRef"):
        FederatedJob.model_validate(mixed)


def test_each_client_is_resolved_to_its_owners_data_budget_and_namespace() -> None:
    out = resolved(owners_job())
    assert out.exec_namespace == OPERATOR_NS
    owners = out.job["metadata"]["ppml.dev/client-datasets"]
    assert owners["clinic-a"]["namespace"] == "clinic-a"
    assert owners["clinic-b"]["data"]["partition"]["index"] == 1
    assert rf.namespaces(out.job) == (OPERATOR_NS, "clinic-a", "clinic-b")
    assert dict(out.datasets).keys() == {"clinic-a/records", "clinic-b/records"}


@pytest.mark.parametrize(("situation", "datasets", "job", "reason", "field"), [
    ("a dataset that does not grant ml-team",
     {**DATASETS, ("clinic-b", "digits"): {**clinic_dataset("clinic-b", 1),
                                           "spec": {**clinic_dataset("clinic-b", 1)["spec"],
                                                    "access": {}}}},
     owners_job(), dataset.DATASET_NOT_GRANTED, "spec.clients[1].datasetRef"),
    ("a missing dataset", {("clinic-a", "digits"): DATASETS[("clinic-a", "digits")]},
     owners_job(), dataset.DATASET_NOT_GRANTED, "spec.clients[1].datasetRef"),
    ("an image the owners did not approve", DATASETS,
     owners_job(runtime={"image": "evil/runtime:latest"}), dataset.IMAGE_NOT_APPROVED,
     "spec.runtime.image"),
    ("no DP on data whose owners allow none", DATASETS, owners_job(mode="None"),
     dataset.NON_PRIVATE_NOT_ALLOWED, "spec.privacy.mode"),
    ("the same shard declared by both clinics",
     {**DATASETS, ("clinic-b", "digits"): clinic_dataset("clinic-b", 0)}, owners_job(),
     dataset.DATASETS_OVERLAP, "spec.clients[1].datasetRef"),
])
def test_the_owners_policy_refuses_what_it_does_not_allow(
        situation: str, datasets: dict[tuple[str, str], Obj | None], job: Obj, reason: str,
        field: str) -> None:
    out = dataset.resolve_federation(job, datasets, operator_namespace=OPERATOR_NS)
    assert isinstance(out, dataset.Refused), situation
    assert (out.reason, out.field) == (reason, field)


def test_central_dp_charges_each_owners_budget_the_client_level_event_in_its_namespace() -> None:
    out = resolved(owners_job())
    price = federated.price(out.job)
    assert not isinstance(price, federated.InvalidSpec), price
    assert [ch.budget for ch in price.charges] == ["clinic-a/records", "clinic-b/records"]
    assert price.charges[0].epsilon == price.charges[1].epsilon
    assert price.charges[0].events[0]["type"] == price.charges[1].events[0]["type"]
    status = federated.FEDERATED.privacy_status(price, "Reserved")
    assert [b["name"] for b in status["budgets"]] == ["clinic-a/records", "clinic-b/records"]


def test_local_dp_charges_each_owners_budget_its_own_silos_dp_sgd() -> None:
    price = federated.price(resolved(owners_job(mode="Local")).job)
    assert not isinstance(price, federated.InvalidSpec), price
    assert [ch.budget for ch in price.charges] == ["clinic-a/records", "clinic-b/records"]
    assert dict(price.paid.clients).keys() == {"clinic-a", "clinic-b"}


def test_the_per_job_limit_of_each_dataset_holds_its_own_charge() -> None:
    tight = {**DATASETS, ("clinic-b", "digits"): clinic_dataset(
        "clinic-b", 1, maxEpsilonPerJob="0.01")}
    out = resolved(owners_job(), tight)
    price = federated.price(out.job)
    assert not isinstance(price, federated.InvalidSpec)
    refused = dataset.epsilon_refusal(out, [(ch.budget, ch.epsilon) for ch in price.charges])
    assert refused is not None and "clinic-b/digits" in refused.message


def render_owners(job: Obj | None = None) -> tuple[Obj, list[Obj]]:
    effective = resolved(job or owners_job()).job
    fj = FederatedJob.model_validate(effective)
    price = federated.price(effective)
    assert not isinstance(price, federated.InvalidSpec)
    secrets = rf.generate_key_secrets(effective, fj, NOW)
    return effective, rf.render_children(effective, fj, price.paid, SETTINGS, secrets)


def placed(children: list[Obj]) -> set[tuple[str, str, str]]:
    return {(c["kind"], c["metadata"]["namespace"], c["metadata"]["name"]) for c in children}


def test_supernodes_and_their_own_keys_run_in_the_owners_namespaces_the_server_in_the_operators(
) -> None:
    _, children = render_owners()
    where = placed(children)
    base = "ml-team-fed"
    assert ("Pod", "clinic-a", f"{base}-supernode-clinic-a") in where
    assert ("Pod", "clinic-b", f"{base}-supernode-clinic-b") in where
    assert ("Pod", OPERATOR_NS, f"{base}-superlink") in where
    assert ("Job", OPERATOR_NS, f"{base}-submit") in where
    for ns in ("clinic-a", "clinic-b"):  # what a SuperNode pod needs in its own namespace
        assert {("ServiceAccount", ns, f"{base}-federation"),
                ("ConfigMap", ns, f"{base}-federation"),
                ("NetworkPolicy", ns, f"{base}-supernode"),
                ("Secret", ns, f"{base}-tls-{ns}")} <= where
    # No child anywhere has an owner reference (they never cross namespaces), every child
    # carries the job's labels.
    for child in children:
        assert "ownerReferences" not in child["metadata"]
        assert child["metadata"]["labels"]["ppml.dev/job-namespace"] == "ml-team"
        assert child["metadata"]["labels"]["ppml.dev/job-uid"] == UID


def test_each_silos_secret_holds_only_its_own_key_and_the_server_holds_no_private_key() -> None:
    _, children = render_owners()
    secrets = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in children
               if c["kind"] == "Secret"}
    assert set(secrets["clinic-a", "ml-team-fed-tls-clinic-a"]["data"]) == {
        "ca.crt", "supernode-clinic-a.key"}
    server = set(secrets[OPERATOR_NS, "ml-team-fed-tls"]["data"])
    assert not any(k.endswith(".key") and k.startswith("supernode-") for k in server)
    assert {"supernode-clinic-a.pub", "supernode-clinic-b.pub", "tls.key"} <= server
    pod = next(c for c in children if c["kind"] == "Pod"
               and c["metadata"]["namespace"] == "clinic-a")
    assert {v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v} == {
        "ml-team-fed-tls-clinic-a"}


def test_each_owner_mounts_only_its_own_silos_declarations_and_each_pod_its_own_config(
) -> None:
    """The attack: a data owner reads the federation's ConfigMap in its namespace to learn what
    the other owners declared (dataset names, record counts, shards, paid steps)."""
    import json

    from ppml_runtime import contract as rc
    from ppml_runtime.federated.contract import FederationConfig

    for mode in ("Central", "Local"):
        _, children = render_owners(owners_job(mode=mode))
        maps = {c["metadata"]["namespace"]: c["data"][rc.CONFIG_FILE] for c in children
                if c["kind"] == "ConfigMap"}
        server = FederationConfig.model_validate_json(maps[OPERATOR_NS])
        assert [c.name for c in server.clients] == ["clinic-a", "clinic-b"]
        for ns, other in (("clinic-a", "clinic-b"), ("clinic-b", "clinic-a")):
            view = FederationConfig.model_validate_json(maps[ns])
            assert [c.name for c in view.clients] == [ns]
            assert view.client_count == 2 and view.clients_per_round == server.clients_per_round
            assert view.client(ns) == server.client(ns)  # its own entry, whole
            assert view.release is None
            assert other not in maps[ns], (mode, ns)  # no trace of the other owner
            assert json.loads(maps[ns])["privacy"] == json.loads(maps[OPERATOR_NS])["privacy"]
        for child in children:
            if child["kind"] not in ("Pod", "Job"):
                continue
            spec = child["spec"] if child["kind"] == "Pod" else child["spec"]["template"]["spec"]
            pins = {e["value"] for c in spec["containers"] for e in c.get("env", [])
                    if e["name"] == rc.ENV_CONFIG_SHA256}
            assert pins == {rc.config_digest(maps[child["metadata"]["namespace"]])}, child[
                "metadata"]["name"]


def test_the_server_side_runs_the_operators_pinned_image_never_the_analysts() -> None:
    job = owners_job(runtime={"image": "ghcr.io/clinic/rt@sha256:" + "c" * 64})
    for ds in DATASETS.values():
        ds["spec"]["access"]["images"] = ["ghcr.io/clinic/rt@sha256:" + "c" * 64]
    try:
        _, children = render_owners(job)
    finally:
        for ds in DATASETS.values():
            del ds["spec"]["access"]["images"]
    for child in children:
        if child["kind"] == "Pod":
            image = child["spec"]["containers"][0]["image"]
            server = child["metadata"]["namespace"] == OPERATOR_NS
            assert image == (SETTINGS.image if server else "ghcr.io/clinic/rt@sha256:" + "c" * 64)
        if child["kind"] == "Job":
            pod = child["spec"]["template"]["spec"]
            assert {c["image"] for c in [*pod["containers"], *pod["initContainers"]]} == {
                SETTINGS.image}


def test_only_the_submitter_reaches_the_control_port_supernodes_only_the_fleet_port() -> None:
    _, children = render_owners()
    policies = {(c["metadata"]["namespace"], c["metadata"]["name"]): c["spec"]
                for c in children if c["kind"] == "NetworkPolicy"}
    fleet, control, metrics = policies[OPERATOR_NS, "ml-team-fed-superlink"]["ingress"]
    assert fleet["ports"] == [{"protocol": "TCP", "port": 9092}]
    assert [(p.get("namespaceSelector"), p["podSelector"]["matchLabels"][
        "app.kubernetes.io/component"]) for p in fleet["from"]] == [
        ({"matchLabels": {"kubernetes.io/metadata.name": ns}}, "supernode")
        for ns in ("clinic-a", "clinic-b")]
    assert control["ports"] == [{"protocol": "TCP", "port": 9093}]
    assert control["from"] == [{"podSelector": {"matchLabels": {
        "ppml.dev/job-uid": UID, "app.kubernetes.io/component": "submitter"}}}]
    # The ServerApp's gauges: only the operator's pods, from its own namespace.
    assert metrics["ports"] == [{"protocol": "TCP", "port": 9097}]
    assert [(p["namespaceSelector"], p["podSelector"]["matchLabels"][
        "app.kubernetes.io/component"]) for p in metrics["from"]] == [
        ({"matchLabels": {"kubernetes.io/metadata.name": OPERATOR_NS}}, "operator")]
    node = policies["clinic-a", "ml-team-fed-supernode"]
    to_link = node["egress"][0]
    assert to_link["ports"] == [{"protocol": "TCP", "port": 9092}]
    assert to_link["to"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": OPERATOR_NS}}


def test_the_operator_scrapes_the_superlink_in_its_own_namespace_never_an_owners() -> None:
    """The live gauges come from the server side's SuperLink pod, in the operator's namespace.

    A data owner may label a pod in their own namespace like the job's SuperLink (pods are
    listed in every namespace of the job by its uid label): it is never scraped.
    """
    effective, children = render_owners()
    [link] = [c for c in children if c["kind"] == "Pod"
              and c["metadata"]["name"] == "ml-team-fed-superlink"]

    def running(pod: Obj, ip: str) -> Obj:
        return {**pod, "status": {"phase": "Running", "podIP": ip}}

    look_alike = running({**link, "metadata": {**link["metadata"], "namespace": "clinic-a"}},
                         "10.0.0.66")
    assert federated.FEDERATED.progress_url(effective, [look_alike]) is None
    assert federated.FEDERATED.progress_url(
        effective, [look_alike, running(link, "10.0.0.7")]) == "http://10.0.0.7:9097/metrics"


def test_deleting_keeps_the_finalizer_until_every_child_in_every_namespace_is_gone() -> None:
    effective, children = render_owners()
    status = {"conditions": [{"type": "Admitted", "status": "True", "reason": "Reserved",
                              "message": "", "lastTransitionTime": "2026-12-01T10:00:00Z"}]}
    job = {**copy.deepcopy(effective), "status": status}
    job["metadata"]["deletionTimestamp"] = "2026-12-01T10:05:00Z"
    leftovers = [c for c in children if c["kind"] not in ("Pod", "Secret")]
    obs = observed(job, {}, children=leftovers, exec_namespace=OPERATOR_NS,
                   namespaces=rf.namespaces(effective))
    plan = federated.decide_deletion(obs, NOW)
    assert not plan.done
    wanted = {(d.kind, d.namespace, d.name) for d in plan.deletions}
    assert ("NetworkPolicy", "clinic-a", "ml-team-fed-supernode") in wanted
    assert ("ConfigMap", "clinic-b", "ml-team-fed-federation") in wanted
    assert ("Job", OPERATOR_NS, "ml-team-fed-submit") in wanted
    gone = observed(job, {}, children=[], exec_namespace=OPERATOR_NS,
                    namespaces=rf.namespaces(effective))
    assert federated.decide_deletion(gone, NOW).done


def test_the_teardown_deletes_each_silos_key_secret_in_its_own_namespace() -> None:
    effective, children = render_owners()
    job = copy.deepcopy(effective)
    job["metadata"]["annotations"] = {rf.KEYS_SECRET_ANNOTATION: "ml-team-fed-tls"}
    pods = [c for c in children if c["kind"] == "Pod"]
    obs = observed(job, {}, pods=pods, exec_namespace=OPERATOR_NS,
                   namespaces=rf.namespaces(effective))
    deletions = federated.FEDERATED.teardown(obs)
    assert Deletion("Secret", "ml-team-fed-tls-clinic-b", namespace="clinic-b") in deletions
    assert {(d.kind, d.namespace) for d in deletions if d.kind == "Pod"} == {
        ("Pod", OPERATOR_NS), ("Pod", "clinic-a"), ("Pod", "clinic-b")}
