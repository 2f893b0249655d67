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
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.kubeapi import ApiError, Client
from devcluster.paths import apiserver_url
from ppml_testing.conditions import condition

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ppml-operator"
POLICY_FILES = ("templates/admission-ledger-guard.yaml", "templates/admission-job-guard.yaml")
PPML = "/apis/ppml.dev/v1alpha1/namespaces/{ns}/{res}"
SYSTEM = "ppml-system"
TIMEOUT_S = 900
ACCURACY_THRESHOLD = 0.7


@dataclass
class Parties:
    """This run's namespaces, identities, the operator and what to remove afterwards."""

    cluster: Any
    run: str
    admin: Client
    analyst: Client | None = None
    engineer: Client | None = None
    created_operator_sa: bool = False
    operator: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    installed: list[str] = field(default_factory=list)

    @property
    def clinic(self) -> str:
        return f"clinic-{self.run}"

    @property
    def ml_team(self) -> str:
        return f"ml-team-{self.run}"

    @property
    def ml_team_b(self) -> str:
        """A second analysts' namespace (its team is played by the admin)."""
        return f"ml-team-b-{self.run}"

    def name(self, base: str) -> str:
        return f"{base}-{self.run}"

    def job_path(self, name: str = "") -> str:
        path = PPML.format(ns=self.ml_team, res="privatetrainingjobs")
        return f"{path}/{name}" if name else path


def helm_template(cluster: Any, *show: str) -> list[dict[str, Any]]:
    from devcluster.tools import find

    args = [find(cluster.bin_dir, "helm"), "template", "ppml", str(CHART), "-n", SYSTEM,
            "--kube-version", "1.34.4"]
    for s in show:
        args += ["--show-only", s]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60, env=cluster.env())
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def token_for(admin: Client, ns: str, sa: str) -> str:
    answer = admin.post(f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 7200}})
    return str(answer["status"]["token"])


def ensure(admin: Client, path: str, body: dict[str, Any]) -> None:
    with contextlib.suppress(ApiError):
        admin.post(path, body)


def refused(call: Callable[[], Any], status: int, *fragments: str) -> str:
    with pytest.raises(ApiError) as err:
        call()
    body = err.value.body if isinstance(err.value.body, dict) else {}
    message = str(body.get("message", ""))
    assert err.value.status == status, (err.value.status, message)
    for fragment in fragments:
        assert fragment in message, message
    return message


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


@pytest.fixture(scope="module")
def parties(devcluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parties]:
    applied = devcluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                                 str(REPO / "crds"))
    assert applied.returncode == 0, applied.stderr
    devcluster.kubectl("wait", "--for=condition=Established", "crd/privatedatasets.ppml.dev",
                       "crd/privatetrainingjobs.ppml.dev", "--timeout=60s")
    p = Parties(devcluster, secrets.token_hex(3), devcluster.api())
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    try:
        ensure(p.admin, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": SYSTEM}})
        for ns in (p.clinic, p.ml_team, p.ml_team_b):
            p.admin.post("/api/v1/namespaces", {
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"ppml-attack-test": p.run}}})
        selector = {"matchLabels": {"ppml-attack-test": p.run}}
        for doc in helm_template(devcluster, *POLICY_FILES):
            doc["metadata"]["name"] = p.name(doc["metadata"]["name"])
            if doc["kind"] == "ValidatingAdmissionPolicyBinding":
                doc["spec"]["policyName"] = p.name(doc["spec"]["policyName"])
                doc["spec"]["matchResources"] = {"namespaceSelector": selector}
            path = "/apis/admissionregistration.k8s.io/v1/" + (
                "validatingadmissionpolicies" if doc["kind"] == "ValidatingAdmissionPolicy"
                else "validatingadmissionpolicybindings")
            p.admin.post(path, doc)
            p.installed.append(f"{path}/{doc['metadata']['name']}")
        roles = {d["metadata"]["name"]: d
                 for d in helm_template(devcluster, "templates/rbac-user-roles.yaml")}
        analyst_role = roles["ppml-analyst"]
        analyst_role["metadata"] = {"name": p.name("ppml-analyst")}
        p.admin.post(f"{rbac}/clusterroles", analyst_role)
        p.installed.append(f"{rbac}/clusterroles/{p.name('ppml-analyst')}")
        # The analyst: ppml-analyst in ml-team, nothing else.
        p.admin.post(f"/api/v1/namespaces/{p.ml_team}/serviceaccounts", {
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "analyst"}})
        p.admin.post(f"{rbac}/namespaces/{p.ml_team}/rolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "analyst"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": p.name("ppml-analyst")},
            "subjects": [{"kind": "ServiceAccount", "name": "analyst",
                          "namespace": p.ml_team}]})
        p.analyst = Client(apiserver_url(), p.cluster.paths.pki / "ca.crt",
                           token=token_for(p.admin, p.ml_team, "analyst"))
        # A team member with Kubernetes' ordinary "edit" in ml-team only (nothing private is
        # there): runs the documented evaluation of the delivered model.
        p.admin.post(f"/api/v1/namespaces/{p.ml_team}/serviceaccounts", {
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "engineer"}})
        p.admin.post(f"{rbac}/namespaces/{p.ml_team}/rolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "engineer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "edit"},
            "subjects": [{"kind": "ServiceAccount", "name": "engineer",
                          "namespace": p.ml_team}]})
        p.engineer = Client(apiserver_url(), p.cluster.paths.pki / "ca.crt",
                            token=token_for(p.admin, p.ml_team, "engineer"))
        # The operator: the identity the chart's policies trust, with the rights to run jobs.
        try:
            p.admin.post(f"/api/v1/namespaces/{SYSTEM}/serviceaccounts", {
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "ppml-operator"}})
            p.created_operator_sa = True
        except ApiError as err:  # the chart's own, when it is installed
            if err.status != 409:
                raise
        p.admin.post(f"{rbac}/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": p.name("attack-test-operator")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "ppml-operator",
                          "namespace": SYSTEM}]})
        p.installed.append(f"{rbac}/clusterrolebindings/{p.name('attack-test-operator')}")
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
        kubeconfig = tmp_path_factory.mktemp("operator") / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "operator",
            "clusters": [{"name": "dc", "cluster": {
                "server": apiserver_url(),
                "certificate-authority": str(p.cluster.paths.pki / "ca.crt")}}],
            "users": [{"name": "operator", "user": {
                "token": token_for(p.admin, SYSTEM, "ppml-operator")}}],
            "contexts": [{"name": "operator", "context": {"cluster": "dc",
                                                          "user": "operator"}}]}))
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1",
               "PPML_RECONCILE_INTERVAL": "2"}
        env.pop("PPML_TRAINER_COMMAND", None)
        p.log = kubeconfig.parent / "operator.log"
        with open(p.log, "wb") as out:
            p.operator = subprocess.Popen(
                [sys.executable, "-m", "ppml_operator", "-n", p.clinic, "-n", p.ml_team,
                 "-n", p.ml_team_b],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        yield p
    finally:
        teardown(p)


def teardown(p: Parties) -> None:
    if p.operator is not None:
        # Delete the jobs while the operator runs, so that it clears their finalizers and
        # children in the owner's namespace.
        for ns in (p.ml_team, p.ml_team_b):
            jobs = PPML.format(ns=ns, res="privatetrainingjobs")
            with contextlib.suppress(ApiError):
                for job in p.admin.get(jobs)["items"]:
                    p.admin.delete(f"{jobs}/{job['metadata']['name']}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(ApiError):
                if not p.admin.get(p.job_path())["items"]:
                    break
            time.sleep(1)
        p.operator.terminate()
        try:
            p.operator.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.operator.kill()
        if p.log is not None:
            print(p.log.read_text()[-6000:])
    for path in reversed(p.installed):  # the guards go first: the namespaces can then go
        with contextlib.suppress(ApiError):
            p.admin.delete(path)
    for ns in (p.ml_team, p.ml_team_b, p.clinic):
        for res in ("privatetrainingjobs", "privacybudgets"):
            with contextlib.suppress(ApiError):
                for obj in p.admin.get(PPML.format(ns=ns, res=res))["items"]:
                    p.admin.patch(f"{PPML.format(ns=ns, res=res)}/{obj['metadata']['name']}",
                                  {"metadata": {"finalizers": None}})
        with contextlib.suppress(ApiError):
            p.admin.delete(f"/api/v1/namespaces/{ns}")
    if p.created_operator_sa:  # a later `helm install` must be able to own it
        with contextlib.suppress(ApiError):
            p.admin.delete(f"/api/v1/namespaces/{SYSTEM}/serviceaccounts/ppml-operator")


def wait_for(p: Parties, name: str, done: Callable[[dict[str, Any]], bool],
             timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        assert p.operator is not None and p.operator.poll() is None, "the operator exited"
        job = p.admin.get(p.job_path(name))
        if done(job):
            return job
        time.sleep(2)
    pytest.fail(f"{name}: not there after {timeout}s: {json.dumps(job.get('status'))}")


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


def probe_port(p: Parties, ip: str, port: int) -> str:
    """From a pod in the analyst's namespace, labelled like the operator, try a TCP connect."""
    name = f"probe-{secrets.token_hex(3)}"
    code = ("import socket,sys\ns=socket.socket();s.settimeout(3)\n"
            f"try:\n  s.connect(({ip!r},{port}));print('CONNECTED')\n"
            "except OSError as e:\n  print('REFUSED',e)\n")
    p.admin.post(f"/api/v1/namespaces/{p.ml_team}/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "ppml-operator",
                                              "app.kubernetes.io/component": "operator"}},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "probe", "image": "python:3.11", "command": ["python", "-c", code]}]}})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pod = p.admin.get(f"/api/v1/namespaces/{p.ml_team}/pods/{name}")
        if pod["status"].get("phase") in ("Succeeded", "Failed"):
            out = p.cluster.kubectl("logs", name, "-n", p.ml_team)
            return str(out.stdout)
        time.sleep(1)
    pytest.fail("the probe pod did not finish")


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
    verdict = probe_port(p, trainer_ip, 9090)
    assert "REFUSED" in verdict and "CONNECTED" not in verdict, verdict
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
    exact: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while not exact and time.monotonic() < deadline:
        owner_events = p.admin.get(f"/api/v1/namespaces/{p.clinic}/events")["items"]
        exact = [e for e in owner_events if e.get("reason") == "ExactTestMetrics"]
        time.sleep(1)
    assert exact, [e.get("reason") for e in owner_events]
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
    assert p.engineer is not None
    evaluate = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "evaluate"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "evaluate", "image": "ghcr.io/ppml-dev/ppml-runtime:0.1.0",
                            "command": ["python", "-m", "ppml_runtime", "evaluate-model",
                                        "--model", f"/models/{name}", "--builtin", "Digits"],
                            "volumeMounts": [{"name": "models", "mountPath": "/models",
                                              "readOnly": True}]}],
            "volumes": [{"name": "models", "persistentVolumeClaim": {
                "claimName": "models", "readOnly": True}}]}}}}
    p.engineer.post(f"/apis/batch/v1/namespaces/{p.ml_team}/jobs", evaluate)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ev = p.engineer.get(f"/apis/batch/v1/namespaces/{p.ml_team}/jobs/evaluate")
        if any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (ev.get("status") or {}).get("conditions") or []):
            break
        time.sleep(2)
    logs = subprocess.run(
        [*kubectl_as(p, "engineer"), "logs", "job/evaluate", "-n", p.ml_team],
        capture_output=True, text=True, timeout=60)
    assert logs.returncode == 0, logs.stderr
    measured = json.loads(logs.stdout.strip().splitlines()[-1])
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


def kubectl_as(p: Parties, sa: str) -> list[str]:
    from devcluster.tools import find

    return [find(p.cluster.bin_dir, "kubectl"), "--server", apiserver_url(),
            "--certificate-authority", str(p.cluster.paths.pki / "ca.crt"),
            "--token", token_for(p.admin, p.ml_team, sa)]


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
    assert "was deleted" in condition(job, "Failed")["message"]
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
