"""A job on a PrivateDataset: resolved against the owner's declaration, or refused by its policy.

Each refusal is an attack a hostile analyst would try from their own namespace (issue 11): a
dataset that does not grant them, an image or model builder the owner did not approve, a job
without DP, a charge above the owner's per-job limit, a claim the owner protects named inline.
The e2e suite (tests/e2e/test_tenant_attacks.py) tries the same against the real API server.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from ppml_operator.reconcile import dataset, lifecycle, training
from ppml_operator.reconcile.plan import Deletion
from ppml_operator.render.common import EXEC_NAMESPACE
from ppml_testing.conditions import cond
from ppml_testing.objects import budget, observed, price_of, training_job

NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
DIGEST = "ghcr.io/clinic/ppml-runtime@sha256:" + "a" * 64


def private_dataset(name: str = "digits", namespace: str = "clinic", **access: Any) -> dict:
    return {
        "kind": "PrivateDataset",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "budgetRef": {"name": "clinic-digits"},
            "data": {"source": "Volume", "numRecords": 1797, "testFraction": "0.2",
                     "volume": {"claimName": "records", "path": "digits.npz", "format": "Npz"}},
            "access": {"namespaces": ["ml-team"], **access},
        },
    }


def analyst_job(**spec: Any) -> dict:
    job = training_job(**spec)
    job["metadata"]["namespace"] = "ml-team"
    del job["spec"]["budgetRef"], job["spec"]["data"]
    job["spec"]["datasetRef"] = {"namespace": "clinic", "name": "digits"}
    return job


def test_a_granted_job_is_resolved_to_the_owners_data_budget_and_namespace() -> None:
    job = analyst_job()
    out = dataset.resolve(job, private_dataset(), {})
    assert isinstance(out, dataset.Resolved)
    assert (out.budget_namespace, out.exec_namespace, out.remote) == ("clinic", "clinic", True)
    spec = out.job["spec"]
    # The owner's declared data and budget: the analyst states neither.
    assert spec["budgetRef"] == {"name": "clinic-digits"}
    assert spec["data"]["numRecords"] == 1797 and spec["data"]["volume"]["claimName"] == "records"
    assert "datasetRef" not in spec
    assert out.job["metadata"][EXEC_NAMESPACE] == "clinic"
    assert job["spec"]["datasetRef"]  # the stored job is untouched
    price = price_of(out.job)
    assert [c.budget for c in price.charges] == ["clinic-digits"]


def test_a_missing_dataset_and_an_ungranted_one_read_the_same() -> None:
    """No oracle: the analyst cannot tell whether the owner holds a dataset of that name."""
    missing = dataset.resolve(analyst_job(), None, {})
    ungranted = dataset.resolve(analyst_job(), private_dataset(namespaces=["other-team"]), {})
    assert isinstance(missing, dataset.Refused) and isinstance(ungranted, dataset.Refused)
    assert missing == ungranted
    assert missing.reason == dataset.DATASET_NOT_GRANTED and missing.field == "spec.datasetRef"


@pytest.mark.parametrize(("attack", "spec", "access", "reason", "field"), [
    ("any image", {"runtime": {"image": "evil.example/exfiltrate:latest"}}, {},
     dataset.IMAGE_NOT_APPROVED, "spec.runtime.image"),
    ("a pinned image the owner did not list", {"runtime": {"image": DIGEST.replace("a", "b")}},
     {"images": [DIGEST]}, dataset.IMAGE_NOT_APPROVED, "spec.runtime.image"),
    ("an unapproved model builder", {"model": {"architecture": "Custom",
                                               "importPath": "evil.models:leak"}},
     {"importPaths": ["clinic.models:small_cnn"]}, dataset.MODEL_NOT_APPROVED,
     "spec.model.importPath"),
])
def test_the_owners_policy_refuses(attack: str, spec: dict, access: dict, reason: str,
                                   field: str) -> None:
    out = dataset.resolve(analyst_job(**spec), private_dataset(**access), {})
    assert isinstance(out, dataset.Refused), attack
    assert (out.reason, out.field) == (reason, field)


def test_what_the_owner_approved_is_admitted() -> None:
    job = analyst_job(runtime={"image": DIGEST},
                      model={"architecture": "Custom", "importPath": "clinic.models:small_cnn"})
    out = dataset.resolve(job, private_dataset(images=[DIGEST],
                                               importPaths=["clinic.models:small_cnn"]), {})
    assert isinstance(out, dataset.Resolved)


def test_a_job_without_dp_needs_the_owners_explicit_consent() -> None:
    job = analyst_job(privacy={"mode": "None"})
    assert dataset.resolve(job, private_dataset(), {}).reason == dataset.NON_PRIVATE_NOT_ALLOWED
    assert isinstance(dataset.resolve(job, private_dataset(allowNonPrivate=True), {}),
                      dataset.Resolved)


def test_the_owners_per_job_limit_refuses_a_costlier_job() -> None:
    resolved = dataset.resolve(analyst_job(), private_dataset(maxEpsilonPerJob="0.5"), {})
    assert isinstance(resolved, dataset.Resolved)
    charged = [(c.budget, c.epsilon) for c in price_of(resolved.job).charges]
    refused = dataset.epsilon_refusal(resolved, charged)
    assert refused is not None and refused.reason == dataset.EPSILON_ABOVE_DATASET_LIMIT
    loose = dataset.resolve(analyst_job(), private_dataset(maxEpsilonPerJob="1000"), {})
    assert dataset.epsilon_refusal(loose, charged) is None


@pytest.mark.parametrize(("spec", "field"), [
    ({"data": {"source": "Volume", "numRecords": 1797, "volume": {
        "claimName": "records", "path": "digits.npz", "format": "Npz"}}},
     "spec.data.volume.claimName"),
    ({"checkpoint": {"claimName": "records"}}, "spec.checkpoint.claimName"),
])
def test_a_protected_claim_cannot_be_named_inline(spec: dict, field: str) -> None:
    """Charging a cheaper budget for protected data: name the claim instead of the dataset."""
    job = training_job(**spec)  # budgetRef: the namespace's own sandbox budget
    protected = dataset.protected_claims([private_dataset(namespace="ns")])
    out = dataset.resolve(job, None, protected)
    assert isinstance(out, dataset.Refused)
    assert (out.reason, out.field) == (dataset.CLAIM_PROTECTED, field)
    assert dataset.mounts_claims(job)


def test_an_admitted_job_is_only_resolved_the_owner_revoking_stops_new_jobs_only() -> None:
    revoked = private_dataset(namespaces=[])
    assert isinstance(dataset.resolve(analyst_job(), revoked, {}), dataset.Refused)
    assert isinstance(dataset.resolve(analyst_job(), revoked, {}, enforce=False),
                      dataset.Resolved)


def test_jobs_on_a_dataset_wait_their_turn_per_dataset() -> None:
    job = analyst_job()
    assert dataset.arrival_keys("ml-team", job["spec"], ()) == [
        ("clinic", "PrivateDataset/digits")]
    assert dataset.arrival_keys("ns", training_job()["spec"], ("clinic",)) == [("ns", "clinic")]


def test_jobs_on_one_budget_wait_in_one_order_whichever_dataset_they_reach_it_through() -> None:
    """Two datasets of the clinic's budget, and the clinic's own job with inline data on it."""
    budget_of = {("clinic", "PrivateDataset/digits"): ("clinic", "records"),
                 ("clinic", "PrivateDataset/digits-2025"): ("clinic", "records"),
                 ("clinic", "PrivateDataset/wine"): ("clinic", "wine"),
                 ("lab", "PrivateDataset/digits"): ("lab", "records")}
    on_digits = dataset.arrival_keys("ml-team", analyst_job()["spec"], ())
    ahead = dataset.keys_ahead(on_digits, budget_of)
    assert ahead == [("clinic", "PrivateDataset/digits"), ("clinic", "PrivateDataset/digits-2025"),
                     ("clinic", "records")]  # not wine (another budget), not the lab's
    inline = dataset.keys_ahead([("clinic", "records")], budget_of)
    assert inline == ahead  # the owner's own inline job waits in the same order
    # A dataset not indexed yet keeps its own key; a budget nobody's dataset uses, its own.
    assert dataset.keys_ahead([("x", "PrivateDataset/new")], budget_of) == [
        ("x", "PrivateDataset/new")]
    assert dataset.keys_ahead([("ns", "sandbox")], budget_of) == [("ns", "sandbox")]


# --- the lifecycle of a job whose children live in the owner's namespace -----------------------


def _resolved_observed(job: dict, **kw: Any) -> Any:
    out = dataset.resolve(job, private_dataset(), {})
    assert isinstance(out, dataset.Resolved)
    owner_budget = budget("clinic-digits")
    owner_budget["metadata"]["namespace"] = "clinic"
    return observed(out.job, owner_budget, exec_namespace="clinic", **kw)


def test_a_remote_jobs_children_live_in_the_owners_namespace_without_owner_references() -> None:
    plan = training.decide(_resolved_observed(analyst_job()), NOW)
    assert cond(plan, "Admitted")["status"] == "True"
    [write] = plan.budget_writes
    assert write.budget["metadata"]["namespace"] == "clinic"
    assert plan.child_namespace == "clinic"
    assert plan.create
    for child in plan.create:
        meta = child["metadata"]
        assert meta["namespace"] == "clinic" and "ownerReferences" not in meta
        assert meta["name"].startswith("ml-team-digits-")
        assert meta["labels"]["ppml.dev/job-namespace"] == "ml-team"
    trainer = next(c for c in plan.create if c["kind"] == "Job")
    pod = trainer["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"] == {"claimName": "records", "readOnly": True}


def test_a_refused_job_waits_with_the_reason_and_is_never_charged() -> None:
    job = analyst_job()
    obs = observed(job, {}, price=price_of(training_job()),
                   refused=dataset.resolve(job, None, {}))
    plan = training.decide(obs, NOW)
    admitted = cond(plan, "Admitted")
    assert (admitted["status"], admitted["reason"]) == ("False", dataset.DATASET_NOT_GRANTED)
    assert admitted["message"].startswith("spec.datasetRef: ")
    assert plan.budget_writes == [] and plan.create == []


def test_deleting_a_remote_job_keeps_the_finalizer_until_its_children_are_gone() -> None:
    admitted_plan = training.decide(_resolved_observed(analyst_job()), NOW)
    job = {**analyst_job(), "status": admitted_plan.status}
    job["metadata"]["deletionTimestamp"] = "2026-12-01T10:05:00Z"
    children = copy.deepcopy(admitted_plan.create)
    for child in children:
        child["metadata"]["uid"] = f"uid-{child['kind']}"
    obs = _resolved_observed(job, children=children)
    plan = lifecycle.decide_deletion(training.TRAINING, obs, NOW)
    assert plan.done is False
    deleted = {(d.kind, d.name) for d in plan.deletions}
    assert {(c["kind"], c["metadata"]["name"]) for c in children} <= deleted
    assert plan.child_namespace == "clinic"
    gone = lifecycle.decide_deletion(training.TRAINING, _resolved_observed(job), NOW)
    assert gone.done is True and not [d for d in gone.deletions if isinstance(d, Deletion)
                                      and d.kind != "Job"]


def test_a_dataset_deleted_under_a_running_job_ends_it_and_commits_its_charge() -> None:
    """The owner deletes the declaration (or its namespace): nothing runs on, nothing is lost."""
    admitted_plan = training.decide(_resolved_observed(analyst_job()), NOW)
    job = {**analyst_job(), "status": admitted_plan.status}
    written = admitted_plan.budget_writes[0]
    owner_budget = {**written.budget, "status": written.status}
    lost = dataset.lost_resolution(job)
    assert (lost.exec_namespace, lost.budget_namespace) == ("clinic", "clinic")
    assert dataset.charged_budgets(job) == ["clinic-digits"]
    runner = next(c for c in admitted_plan.create if c["kind"] == "Job")
    obs = observed(lost.job, {"clinic-digits": owner_budget}, exec_namespace="clinic",
                   price=price_of(training_job()), children=[runner],
                   lost=dataset.resolve(job, None, {}, enforce=False))
    plan = training.decide(obs, NOW)
    failed = cond(plan, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "DatasetDeleted")
    assert [w.operation for w in plan.budget_writes] == ["commit"]
    assert ("Job", runner["metadata"]["name"]) in {(d.kind, d.name) for d in plan.deletions}
