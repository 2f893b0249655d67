"""The tenant-attack suite: a hostile analyst tries to cross the privacy boundary, on devcluster.

Two parties, each in their own namespace (issue 11):

- the data owner (``clinic-<run>``) holds a PrivacyBudget and a PrivateDataset (scikit-learn's
  digits, a public stand-in for private records) granting only the analyst's namespace;
- the analyst (``ml-team-<run>``) is a ServiceAccount that holds only the chart's
  ``ppml-analyst`` role there, and acts with a token from the TokenRequest API, so every 403
  below is the real API server's.

The operator runs as the chart's operator identity (ServiceAccount ``ppml-system/ppml-operator``,
which the chart's admission policies trust), with the real trainer, watching both namespaces;
the chart's ValidatingAdmissionPolicies are bound to this run's namespaces. Each attack is
tried and refused with a message, nothing is charged wrongly, nothing private leaks; and the
one thing that should cross does: the model, delivered into the analyst's claim, loaded and
evaluated there by the analyst.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from devcluster.kubeapi import ApiError
from ppml_testing import parties
from ppml_testing.conditions import condition
from ppml_testing.parties import (
    PPML,
    REPO,
    RESTRICTED,
    evaluate_delivered_model,
    owner_events,
    probe_port,
    refused,
    set_up,
    start_operator,
    tear_down,
    wait_for_job,
)

OPERATOR_LABELS = {"app.kubernetes.io/name": "ppml-operator",
                   "app.kubernetes.io/component": "operator"}
"""The labels of the chart's operator pods (the only peers a trainer's policy admits)."""

TIMEOUT_S = 900
ACCURACY_THRESHOLD = 0.7


class Parties(parties.Parties):
    """The parties of this suite: one data owner, the clinic."""

    @property
    def clinic(self) -> str:
        return self.owners[0]

    @property
    def ml_team_b(self) -> str:
        """A second analysts' namespace (its team is played by the admin)."""
        return self.others[0]


def training_job(name: str, **spec: Any) -> dict[str, Any]:
    """The analyst's DP-SGD job on the clinic's digits (as examples/private-training has it)."""
    return {
        "apiVersion": "ppml.dev/v1alpha1", "kind": "PrivateTrainingJob",
        "metadata": {"name": name},
        "spec": {
            "privacy": {"targetEpsilon": "1.0", "delta": "1e-5", "maxGradNorm": "1.0"},
            "model": {"architecture": "Mlp", "hiddenUnits": [128]},
            "training": {"epochs": 15, "batchSize": 64, "learningRate": "0.01",
                         "optimizer": "Adam", "seed": 0},
            "activeDeadlineSeconds": 600,
            **spec,
        },
    }


LISTENER_PORT = 8080


def trainer_policy_selector(p: Parties, uid: str) -> dict[str, str]:
    """Return the labels the job's NetworkPolicy in the owner's namespace selects its pods by."""
    policies = p.admin.get(f"/apis/networking.k8s.io/v1/namespaces/{p.clinic}/networkpolicies",
                           labelSelector=f"ppml.dev/job-uid={uid}")["items"]
    [policy] = [np for np in policies if "Egress" in np["spec"].get("policyTypes", [])]
    return dict(policy["spec"]["podSelector"]["matchLabels"])


def start_listener(p: Parties, ns: str) -> str:
    """Start a TCP listener pod in ``ns`` (no policy selects it); return its IP once running."""
    name = f"listener-{secrets.token_hex(3)}"
    p.admin.post(f"/api/v1/namespaces/{ns}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                 "activeDeadlineSeconds": 300,
                 "containers": [{"name": "listen", "image": "python:3.11", "command": [
                     "python", "-m", "http.server", str(LISTENER_PORT)],
                     "securityContext": RESTRICTED}]}})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pod = p.admin.get(f"/api/v1/namespaces/{ns}/pods/{name}")
        if pod["status"].get("phase") == "Running" and pod["status"].get("podIP"):
            time.sleep(1)  # the server binds just after the process starts
            return str(pod["status"]["podIP"])
        time.sleep(1)
    pytest.fail("the listener pod did not start")


@pytest.fixture(scope="module")
def parties(devcluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parties]:
    applied = devcluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                                 str(REPO / "crds"))
    assert applied.returncode == 0, applied.stderr
    devcluster.kubectl("wait", "--for=condition=Established", "crd/privatedatasets.ppml.dev",
                       "crd/privatetrainingjobs.ppml.dev", "--timeout=60s")
    run = secrets.token_hex(3)
    p = Parties(devcluster, run, devcluster.api(), owners=(f"clinic-{run}",),
                others=(f"ml-team-b-{run}",))
    try:
        set_up(p)
        # The data owner's side (the admin acts for the owner): a budget, the declaration.
        owner_budget = {"apiVersion": "ppml.dev/v1alpha1", "kind": "PrivacyBudget",
                        "metadata": {"name": "digits"},
                        "spec": {"epsilon": 3, "delta": "1e-5", "composition": "RDP"}}
        p.admin.post(PPML.format(ns=p.clinic, res="privacybudgets"), owner_budget)
        sandbox = {**owner_budget, "metadata": {"name": "sandbox"}, "spec": {
            "epsilon": 1000, "delta": "1e-5"}}
        p.admin.post(PPML.format(ns=p.ml_team, res="privacybudgets"), sandbox)
        p.admin.post(PPML.format(ns=p.clinic, res="privatedatasets"), {
            "apiVersion": "ppml.dev/v1alpha1", "kind": "PrivateDataset",
            "metadata": {"name": "digits"},
            "spec": {"budgetRef": {"name": "digits"},
                     "data": {"source": "Builtin", "builtin": {"name": "Digits"},
                              "numRecords": 1797, "testFraction": "0.2"},
                     "access": {"namespaces": [p.ml_team, p.ml_team_b],
                                "maxEpsilonPerJob": "2"}}})
        # The team's own records in ml-team, declared there (single-namespace use): a job of
        # the namespace must name this dataset, never mount the claim with a cheaper budget.
        p.admin.post(PPML.format(ns=p.ml_team, res="privatedatasets"), {
            "apiVersion": "ppml.dev/v1alpha1", "kind": "PrivateDataset",
            "metadata": {"name": "team-records"},
            "spec": {"budgetRef": {"name": "sandbox"},
                     "data": {"source": "Volume", "numRecords": 1797, "volume": {
                         "claimName": "team-records", "path": "digits.npz", "format": "Npz"}}}})
        p.admin.post(PPML.format(ns=p.clinic, res="privatedatasets"), {
            "apiVersion": "ppml.dev/v1alpha1", "kind": "PrivateDataset",
            "metadata": {"name": "wine"},
            "spec": {"budgetRef": {"name": "digits"},
                     "data": {"source": "Builtin", "builtin": {"name": "Wine"},
                              "numRecords": 178},
                     "access": {"namespaces": ["someone-else"]}}})
        p.admin.post(f"/api/v1/namespaces/{p.ml_team}/persistentvolumeclaims", {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}})
        start_operator(p, tmp_path_factory.mktemp("operator"),
                       (p.clinic, p.ml_team, p.ml_team_b))
        yield p
    finally:
        tear_down(p)


def wait_for(p: Parties, name: str, done: Callable[[dict[str, Any]], bool],
             timeout: float = 120) -> dict[str, Any]:
    return wait_for_job(p, name, done, timeout)


def admitted_reason(job: dict[str, Any]) -> str | None:
    cond = condition(job, "Admitted")
    return str(cond.get("reason")) if cond else None


def charges(p: Parties) -> list[dict[str, Any]]:
    budget = p.admin.get(PPML.format(ns=p.clinic, res="privacybudgets") + "/digits")
    return list((budget.get("status") or {}).get("charges") or [])


# -- what the analyst cannot even read ----------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/api/v1/namespaces/{clinic}/pods",
    "/api/v1/namespaces/{clinic}/pods/any-trainer/log",
    "/api/v1/namespaces/{clinic}/persistentvolumeclaims",
    "/api/v1/namespaces/{clinic}/secrets",
    "/api/v1/namespaces/{clinic}/events",
    "/api/v1/namespaces/{clinic}/configmaps",
    "/apis/ppml.dev/v1alpha1/namespaces/{clinic}/privacybudgets",
    "/apis/ppml.dev/v1alpha1/namespaces/{clinic}/privatedatasets",
    "/apis/batch/v1/namespaces/{clinic}/jobs",
])
def test_the_analyst_cannot_read_the_owners_namespace(parties: Parties, path: str) -> None:
    assert parties.analyst is not None
    refused(lambda: parties.analyst.get(path.format(clinic=parties.clinic)), 403, "forbidden")


def test_the_analyst_cannot_delete_the_budget_or_write_its_ledger(parties: Parties) -> None:
    assert parties.analyst is not None
    budget = PPML.format(ns=parties.clinic, res="privacybudgets") + "/digits"
    refused(lambda: parties.analyst.delete(budget), 403, "forbidden")
    refused(lambda: parties.analyst.patch(f"{budget}/status", {"status": {"charges": []}}),
            403, "forbidden")


# -- what the API server refuses at apply -----------------------------------------------------


@pytest.mark.parametrize(("attack", "spec", "fragment"), [
    ("charging a cheaper budget for protected data",
     {"datasetRef": {"namespace": "{clinic}", "name": "digits"}, "budgetRef": {"name": "sandbox"}},
     "charged to the dataset's own budget"),
    ("a checkpoint claim of the analyst's choosing next to the data",
     {"datasetRef": {"namespace": "{clinic}", "name": "digits"},
      "checkpoint": {"claimName": "records"}},
     "mounts no claim of its own choosing next to the data"),
    ("the protected data named inline as well",
     {"datasetRef": {"namespace": "{clinic}", "name": "digits"}, "budgetRef": {"name": "sandbox"},
      "data": {"source": "Builtin", "builtin": {"name": "Digits"}, "numRecords": 1797}},
     "set exactly one of datasetRef"),
])
def test_the_api_server_refuses(parties: Parties, attack: str, spec: dict[str, Any],
                                fragment: str) -> None:
    assert parties.analyst is not None
    body = training_job("refused", **json.loads(
        json.dumps(spec).replace("{clinic}", parties.clinic)))
    refused(lambda: parties.analyst.post(parties.job_path(), body), 422, fragment)


# -- what the operator refuses, charging nothing ------------------------------------------------


def test_the_owners_policy_refuses_each_attack_and_charges_nothing(parties: Parties) -> None:
    p = parties
    assert p.analyst is not None
    ref = {"namespace": p.clinic, "name": "digits"}
    attacks = {
        # any image next to the data
        "any-image": (training_job("any-image", datasetRef=ref, runtime={
            "image": "evil.example/exfiltrate:latest"}), "ImageNotApproved"),
        # model code the owner did not approve
        "custom-model": (training_job("custom-model", datasetRef=ref, model={
            "architecture": "Custom", "importPath": "evil.models:leak"}), "ModelNotApproved"),
        # a dataset that does not grant the analyst's namespace
        "not-granted": (training_job("not-granted", datasetRef={
            "namespace": p.clinic, "name": "wine"}), "DatasetNotGranted"),
        # a dataset that does not exist reads the same (no oracle)
        "no-such": (training_job("no-such", datasetRef={
            "namespace": p.clinic, "name": "no-such"}), "DatasetNotGranted"),
        # more than the owner lets one job take
        "too-costly": (training_job("too-costly", datasetRef=ref, privacy={
            "targetEpsilon": "2.5", "delta": "1e-5", "maxGradNorm": "1.0"}),
            "EpsilonAboveDatasetLimit"),
        # the team's protected claim, mounted inline and charged to the sandbox budget
        "protected-claim": (training_job("protected-claim", budgetRef={"name": "sandbox"},
                                         data={"source": "Volume", "numRecords": 1797,
                                               "volume": {"claimName": "team-records",
                                                          "path": "digits.npz",
                                                          "format": "Npz"}}),
                            "ClaimProtected"),
    }
    for body, _ in attacks.values():
        p.analyst.post(p.job_path(), body)
    for name, (_, reason) in attacks.items():
        job = wait_for(p, name, lambda j: admitted_reason(j) not in (None, "Pending"))
        cond = condition(job, "Admitted")
        assert cond is not None and cond["status"] == "False", (name, cond)
        assert cond["reason"] == reason, (name, cond)
        assert cond["message"].startswith("spec."), cond["message"]  # names the field
    not_granted = condition(p.admin.get(p.job_path("not-granted")), "Admitted")
    no_such = condition(p.admin.get(p.job_path("no-such")), "Admitted")
    assert not_granted is not None and no_such is not None
    assert not_granted["message"].replace("wine", "X") == no_such["message"].replace(
        "no-such", "X")
    time.sleep(4)  # two more reconcile intervals: still nothing charged, nothing running
    assert charges(p) == []
    pods = p.admin.get(f"/api/v1/namespaces/{p.clinic}/pods")["items"]
    assert pods == [], [x["metadata"]["name"] for x in pods]
    for name in attacks:
        p.analyst.delete(p.job_path(name))


# -- the one thing that crosses, and nothing else -----------------------------------------------


def test_the_model_crosses_and_nothing_else(parties: Parties) -> None:
    p = parties
    assert p.analyst is not None
    name = "digits-dp-sgd"
    body = training_job(name, datasetRef={"namespace": p.clinic, "name": "digits"},
                        output={"model": {"claimName": "models"},
                                "testMetrics": {"noiseMultiplier": "20"}})
    p.analyst.post(p.job_path(), body)
    job = wait_for(p, name, lambda j: bool(condition(j, "Admitted") and condition(
        j, "Admitted")["status"] == "True"))
    uid = job["metadata"]["uid"]
    # The trainer runs in the owner's namespace; from the analyst's, even a pod labelled like
    # the operator cannot reach its metrics port (the batch loss on private records).
    deadline = time.monotonic() + 300
    trainer_ip = None
    while time.monotonic() < deadline and trainer_ip is None:
        pods = p.admin.get(f"/api/v1/namespaces/{p.clinic}/pods",
                           labelSelector=f"ppml.dev/job-uid={uid}")["items"]
        for pod in pods:
            if pod["status"].get("phase") == "Running" and pod["status"].get("podIP"):
                trainer_ip = pod["status"]["podIP"]
                assert pod["spec"].get("automountServiceAccountToken") is False
                assert pod["metadata"]["labels"]["ppml.dev/job-namespace"] == p.ml_team
        time.sleep(1)
    assert trainer_ip, "the trainer never ran in the owner's namespace"
    verdict = probe_port(p, p.ml_team, OPERATOR_LABELS, trainer_ip, 9090)
    assert "REFUSED" in verdict and "CONNECTED" not in verdict, verdict
    # Nothing leaves the trainer but to its peers and the cluster DNS: a pod wearing the labels
    # its NetworkPolicy selects (created with the operator's identity, as only the operator may
    # set them there) cannot reach a listener in ml-team that a plain pod of the clinic reaches.
    trainer_labels = trainer_policy_selector(p, uid)
    listener_ip = start_listener(p, p.ml_team)
    reached = probe_port(p, p.clinic, {}, listener_ip, LISTENER_PORT)
    assert "CONNECTED" in reached, reached
    blocked = probe_port(p, p.clinic, trainer_labels, listener_ip, LISTENER_PORT,
                         as_=p.operator_api)
    assert "REFUSED" in blocked and "CONNECTED" not in blocked, blocked
    # Relabelling the trainer's pods: the analyst cannot even see them.
    refused(lambda: p.analyst.patch(f"/api/v1/namespaces/{p.clinic}/pods/x",
                                    {"metadata": {"labels": {"ppml.dev/job-uid": "x"}}}),
            403, "forbidden")
    # Stripping the job's finalizer (the ledger's hold on it) is refused by the job guard.
    refused(lambda: p.analyst.patch(p.job_path(name), {"metadata": {"finalizers": None}}),
            403, "ppml.dev/finalizer")

    job = wait_for(p, name, lambda j: any(
        (condition(j, t) or {}).get("status") == "True" for t in ("Complete", "Failed")),
        timeout=TIMEOUT_S)
    status = job["status"]
    assert (condition(job, "Complete") or {}).get("status") == "True", json.dumps(status)
    assert status["output"]["uri"] == f"pvc://models/{name}"
    # Only the DP release of the test metrics; no batch loss anywhere in status.
    assert "loss" not in (status.get("progress") or {})
    released = float(status["metrics"]["testAccuracy"])
    assert status["metrics"]["releaseNoiseMultiplier"] == "20"
    # The exact figures are the owner's: an event in the clinic namespace, none in ml-team.
    # (posted last in the pass that completed the job: wait a moment for it)
    exact = owner_events(p, p.clinic, "ExactTestMetrics")
    assert exact, "no ExactTestMetrics event in the owner's namespace"
    assert "not differentially private" in exact[0]["message"]
    analyst_events = p.analyst.get(f"/api/v1/namespaces/{p.ml_team}/events")["items"]
    assert not [e for e in analyst_events if e.get("reason") == "ExactTestMetrics"]
    # Charged once, on the owner's budget, for what ran (training and the metric release).
    [charge] = [c for c in charges(p) if c["jobUID"] == uid]
    assert charge["state"] == "Committed"
    assert Decimal(charge["epsilon"]) == Decimal(status["privacy"]["epsilon"])
    assert charge.get("jobNamespace", p.ml_team) == p.ml_team
    # The analyst's team loads the delivered model in ml-team and measures it on public data
    # (ordinary "edit" rights in ml-team: ppml-analyst alone runs no pods).
    measured = evaluate_delivered_model(p, "models", name)
    assert measured["accuracy"] >= ACCURACY_THRESHOLD, measured
    print(f"delivered {status['output']['uri']}: accuracy measured by the analyst "
          f"{measured['accuracy']:.4f}, released (sigma 20) {released:.4f}, "
          f"epsilon charged {charge['epsilon']}")

    # Deleting the job removes its children in the owner's namespace (no owner references
    # cross namespaces: the finalizer deletes them by label); the charge stays.
    p.analyst.delete(p.job_path(name))
    deadline = time.monotonic() + 120
    left: list[str] = []
    while time.monotonic() < deadline:
        left = []
        for path in (f"/api/v1/namespaces/{p.clinic}/pods",
                     f"/api/v1/namespaces/{p.clinic}/configmaps",
                     f"/api/v1/namespaces/{p.clinic}/persistentvolumeclaims",
                     f"/apis/batch/v1/namespaces/{p.clinic}/jobs",
                     f"/apis/networking.k8s.io/v1/namespaces/{p.clinic}/networkpolicies"):
            items = p.admin.get(path, labelSelector=f"ppml.dev/job-uid={uid}")["items"]
            left += [f"{i.get('kind', path)}:{i['metadata']['name']}" for i in items
                     if not i["metadata"].get("deletionTimestamp")]
        gone = False
        try:
            p.admin.get(p.job_path(name))
        except ApiError as err:
            gone = err.status == 404
        if gone and not left:
            break
        time.sleep(2)
    assert gone and not left, left
    [after] = [c for c in charges(p) if c["jobUID"] == uid]
    assert after["state"] == "Committed"


# -- cleanup across namespaces, without owner references ----------------------------------------


def long_job(name: str, ref: dict[str, str]) -> dict[str, Any]:
    job = training_job(name, datasetRef=ref)
    job["spec"]["training"]["epochs"] = 400  # minutes of training: deleted while it runs
    return job


def trainer_running(p: Parties, uid: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = p.admin.get(f"/api/v1/namespaces/{p.clinic}/pods",
                           labelSelector=f"ppml.dev/job-uid={uid}")["items"]
        if any(x["status"].get("phase") == "Running" for x in pods):
            return
        time.sleep(1)
    pytest.fail("the trainer never ran in the owner's namespace")


def children_left(p: Parties, uid: str) -> list[str]:
    left = []
    for path in (f"/api/v1/namespaces/{p.clinic}/pods",
                 f"/api/v1/namespaces/{p.clinic}/configmaps",
                 f"/api/v1/namespaces/{p.clinic}/serviceaccounts",
                 f"/apis/batch/v1/namespaces/{p.clinic}/jobs",
                 f"/apis/networking.k8s.io/v1/namespaces/{p.clinic}/networkpolicies"):
        with contextlib.suppress(ApiError):
            items = p.admin.get(path, labelSelector=f"ppml.dev/job-uid={uid}")["items"]
            left += [f"{path.rsplit('/', 1)[-1]}:{i['metadata']['name']}" for i in items]
    return left


def test_deleting_the_analysts_namespace_leaves_nothing_in_the_owners(parties: Parties) -> None:
    p = parties
    jobs = PPML.format(ns=p.ml_team_b, res="privatetrainingjobs")
    p.admin.post(jobs, long_job("long", {"namespace": p.clinic, "name": "digits"}))
    uid = p.admin.get(f"{jobs}/long")["metadata"]["uid"]
    trainer_running(p, uid)
    p.admin.delete(f"/api/v1/namespaces/{p.ml_team_b}")
    deadline = time.monotonic() + 180
    gone = False
    while time.monotonic() < deadline and not gone:
        try:
            p.admin.get(f"/api/v1/namespaces/{p.ml_team_b}")
        except ApiError as err:
            gone = err.status == 404
        time.sleep(2)
    assert gone, "the analyst's namespace stayed"
    assert children_left(p, uid) == []
    [charge] = [c for c in charges(p) if c["jobUID"] == uid]
    assert charge["state"] == "Committed"  # it ran: the privacy was spent


def test_deleting_the_owners_namespace_ends_the_job_and_keeps_the_ledger(
        parties: Parties) -> None:
    p = parties
    assert p.analyst is not None
    p.analyst.post(p.job_path(), long_job("orphaned", {"namespace": p.clinic,
                                                       "name": "digits"}))
    uid = p.admin.get(p.job_path("orphaned"))["metadata"]["uid"]
    trainer_running(p, uid)
    p.admin.delete(f"/api/v1/namespaces/{p.clinic}")
    try:
        job = wait_for(p, "orphaned", lambda j: (condition(j, "Failed") or {}).get(
            "status") == "True", timeout=180)
    except pytest.fail.Exception:
        ns = p.admin.get(f"/api/v1/namespaces/{p.clinic}")
        left = children_left(p, uid)
        pytest.fail(f"the job did not end; namespace: {json.dumps(ns.get('status'))}; "
                    f"children left: {left}")
    failed = condition(job, "Failed")
    assert failed is not None and failed["reason"] == "DatasetDeleted", failed
    assert p.clinic in failed["message"] and "committed" in failed["message"], failed
    # The namespace's pods and children go; the ledger cannot be wiped with it: the ledger
    # guard keeps the budget (and the namespace Terminating) while it holds charges.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and children_left(p, uid):
        time.sleep(2)
    assert children_left(p, uid) == []
    budget = p.admin.get(PPML.format(ns=p.clinic, res="privacybudgets") + "/digits")
    states = {c["jobUID"]: c["state"] for c in budget["status"]["charges"]}
    assert states[uid] == "Committed"
    assert all(state == "Committed" for state in states.values()), states
    assert p.admin.get(f"/api/v1/namespaces/{p.clinic}")["status"]["phase"] == "Terminating"
