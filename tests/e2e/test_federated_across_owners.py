"""A federation across two data owners' namespaces, end to end on devcluster (issue 12).

``examples/federated/across-clinics/`` with this run's namespaces: clinic A (one PrivateDataset,
digits shard 0 of 3, and its budget) and clinic B (two sites, shards 1 and 2, each with its own
budget) grant ``ml-team-<run>``, whose analyst (only ``ppml-analyst`` there) submits a SecAgg+
federation with local DP delivering its final model onto a claim in ml-team. The operator runs
as the chart's operator identity (``ppml.testing.parties``), watching the operator's namespace
(``ppml-system``, where the server side runs) and the three parties'.

Asserted: the job completes; each SuperNode runs in its dataset's namespace and the SuperLink
and submitter in the operator's; a pod in an owner's namespace wearing a SuperNode's labels
reaches the SuperLink's Fleet port but not its Control port (devcluster's node agent enforces
NetworkPolicies); each owner's budget holds exactly one committed charge equal to what
``status.privacy`` says; the status holds no loss or accuracy (the exact per-round figures are
an event in the operator's namespace); the model is delivered (``status.output.uri``) and,
loaded in ml-team by the analyst's team, classifies public digits with accuracy >= 0.80;
deleting the job removes every child in every namespace and keeps the charges.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import yaml

from devcluster.kubeapi import ApiError, Client
from ppml_testing.conditions import condition
from ppml_testing.parties import (
    REPO,
    SYSTEM,
    Parties,
    evaluate_delivered_model,
    owner_events,
    probe_port,
    refused,
    set_up,
    start_operator,
    tear_down,
    wait_for_job,
)

pytestmark = [pytest.mark.slow]

EXAMPLE = REPO / "examples" / "federated" / "across-clinics"
JOB = "digits-across-clinics"
FEDJOBS = "federatedjobs"
ACCURACY_THRESHOLD = 0.80
TIMEOUT_S = 1500
FLEET_PORT, CONTROL_PORT = 9092, 9093
Obj = dict[str, Any]

PATHS = {
    "PrivacyBudget": "/apis/ppml.dev/v1alpha1/namespaces/{ns}/privacybudgets",
    "PrivateDataset": "/apis/ppml.dev/v1alpha1/namespaces/{ns}/privatedatasets",
    "FederatedJob": "/apis/ppml.dev/v1alpha1/namespaces/{ns}/federatedjobs",
    "PersistentVolumeClaim": "/api/v1/namespaces/{ns}/persistentvolumeclaims",
}
CHILDREN = ("/api/v1/namespaces/{ns}/pods", "/api/v1/namespaces/{ns}/configmaps",
            "/api/v1/namespaces/{ns}/secrets", "/api/v1/namespaces/{ns}/serviceaccounts",
            "/api/v1/namespaces/{ns}/services",
            "/api/v1/namespaces/{ns}/persistentvolumeclaims",
            "/apis/batch/v1/namespaces/{ns}/jobs",
            "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies")


def example_docs(rename: dict[str, str]) -> dict[str, list[Obj]]:
    """Return the example's objects by (renamed) namespace, Namespaces left out.

    Every namespace the example names (metadata, grants, dataset references) is renamed to
    this run's.
    """
    out: dict[str, list[Obj]] = {}
    for path in sorted(EXAMPLE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc["kind"] == "Namespace":
                continue
            doc = copy.deepcopy(doc)
            ns = rename[doc["metadata"].pop("namespace")]
            spec = doc.get("spec") or {}
            access = spec.get("access") or {}
            if "namespaces" in access:
                access["namespaces"] = [rename[n] for n in access["namespaces"]]
            for client in spec.get("clients") or [] if doc["kind"] == "FederatedJob" else []:
                ref = client.get("datasetRef") or {}
                if "namespace" in ref:
                    ref["namespace"] = rename[ref["namespace"]]
            out.setdefault(ns, []).append(doc)
    return out


def post(client: Client, ns: str, doc: Obj) -> None:
    client.post(PATHS[doc["kind"]].format(ns=ns), doc)


@pytest.fixture(scope="module")
def parties(devcluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parties]:
    applied = devcluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                                 str(REPO / "crds"))
    assert applied.returncode == 0, applied.stderr
    devcluster.kubectl("wait", "--for=condition=Established", "crd/privatedatasets.ppml.dev",
                       "crd/federatedjobs.ppml.dev", "--timeout=60s")
    run = secrets.token_hex(3)
    p = Parties(devcluster, run, devcluster.api(), owners=(f"clinic-a-{run}", f"clinic-b-{run}"),
                job_resources=(FEDJOBS,))
    try:
        # The owners' namespaces enforce the restricted Pod Security Standard (the SuperNodes
        # meet it); ml-team does not (the engineer's evaluation Job is a plain one).
        set_up(p, restricted=p.owners)
        start_operator(p, tmp_path_factory.mktemp("operator"), (SYSTEM, *p.namespaces))
        yield p
    finally:
        tear_down(p)


def by_uid(p: Parties, ns: str, uid: str, path: str = "/api/v1/namespaces/{ns}/pods"
           ) -> list[Obj]:
    items: list[Obj] = p.admin.get(path.format(ns=ns), labelSelector=f"ppml.dev/job-uid={uid}")[
        "items"]
    return [i for i in items if not i["metadata"].get("deletionTimestamp")]


def component(obj: Obj) -> str:
    return str(obj["metadata"]["labels"].get("app.kubernetes.io/component", ""))


def keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from keys(v)
    elif isinstance(node, list):
        for v in node:
            yield from keys(v)


@pytest.mark.timeout(TIMEOUT_S + 600)
def test_a_federation_across_two_owners_delivers_a_useful_model(parties: Parties) -> None:
    p = parties
    assert p.analyst is not None
    clinic_a, clinic_b = p.owners
    rename = {"clinic-a": clinic_a, "clinic-b": clinic_b, "ml-team": p.ml_team}
    docs = example_docs(rename)
    for owner in p.owners:  # the admin acts for each owner: budgets, then their declarations
        for doc in sorted(docs[owner], key=lambda d: d["kind"] != "PrivacyBudget"):
            post(p.admin, owner, doc)
    [claim] = [d for d in docs[p.ml_team] if d["kind"] == "PersistentVolumeClaim"]
    [job_doc] = [d for d in docs[p.ml_team] if d["kind"] == "FederatedJob"]
    post(p.analyst, p.ml_team, claim)  # ppml-analyst creates the model's claim

    # The attack first: the same federation without DP, on datasets whose owners did not set
    # access.allowNonPrivate. Refused before anything is charged or started.
    no_dp = copy.deepcopy(job_doc)
    no_dp["metadata"]["name"] = "no-dp"
    no_dp["spec"]["privacy"] = {"mode": "None"}
    post(p.analyst, p.ml_team, no_dp)
    refused_job = wait_for_job(p, "no-dp", lambda j: (condition(j, "Admitted") or {}).get(
        "status") in ("True", "False"), timeout=120, res=FEDJOBS)
    cond = condition(refused_job, "Admitted") or {}
    assert (cond.get("status"), cond.get("reason")) == ("False", "NonPrivateNotAllowed"), cond
    assert cond["message"].startswith("spec.privacy.mode"), cond["message"]
    for owner in p.owners:
        for doc in docs[owner]:
            if doc["kind"] == "PrivacyBudget":
                budget = p.admin.get(p.path(owner, "privacybudgets", doc["metadata"]["name"]))
                assert not (budget.get("status") or {}).get("charges"), budget["status"]
        assert not by_uid(p, owner, refused_job["metadata"]["uid"])
    p.analyst.delete(p.job_path("no-dp", FEDJOBS))

    started = time.monotonic()
    post(p.analyst, p.ml_team, job_doc)
    job = wait_for_job(p, JOB, lambda j: (condition(j, "Admitted") or {}).get("status") in (
        "True", "False"), timeout=180, res=FEDJOBS)
    assert (condition(job, "Admitted") or {}).get("status") == "True", json.dumps(job["status"])
    uid = job["metadata"]["uid"]

    # Where each role runs: each SuperNode in its dataset's namespace, the server side in the
    # operator's; a pod in an owner's namespace wearing a SuperNode's labels reaches the
    # SuperLink's Fleet port, never its Control port.
    expected_nodes = {c["name"]: rename_ns for c in job_doc["spec"]["clients"]
                      for rename_ns in [c["datasetRef"]["namespace"]]}
    seen: dict[str, set[str]] = {}
    superlink_ip = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert p.operator is not None and p.operator.poll() is None, "the operator exited"
        for ns in (SYSTEM, *p.namespaces):
            for pod in by_uid(p, ns, uid):
                seen.setdefault(component(pod), set()).add(ns)
                if component(pod) == "supernode":
                    client = pod["metadata"]["labels"]["ppml.dev/client"]
                    assert ns == expected_nodes[client], (client, ns)
                    assert pod["spec"].get("automountServiceAccountToken") is False
                if component(pod) == "superlink" and pod["status"].get("podIP") and \
                        pod["status"].get("phase") == "Running":
                    superlink_ip = pod["status"]["podIP"]
        if superlink_ip and seen.get("supernode", set()) == set(p.owners) and \
                "submitter" in seen:
            break
        time.sleep(2)
    assert superlink_ip, f"the SuperLink never ran: {seen}"
    # What each owner finds of the others in its own namespace: nothing. Its copy of the
    # federation's config lists only its own silos (the run config carries only the job's UID).
    for owner in p.owners:
        [config_map] = by_uid(p, owner, uid, "/api/v1/namespaces/{ns}/configmaps")
        text = config_map["data"]["config.json"]
        listed = {c["name"] for c in json.loads(text)["clients"]}
        assert listed == {c for c, ns in expected_nodes.items() if ns == owner}, listed
        others = (set(p.owners) - {owner}) | {c for c, ns in expected_nodes.items()
                                              if ns != owner}
        assert not [o for o in others if o in text], (owner, others)
    assert seen["superlink"] == {SYSTEM}, seen
    assert seen["submitter"] == {SYSTEM}, seen
    assert seen["supernode"] == set(p.owners), seen
    # Only the operator may put the job's labels on a pod there (the chart's children guard):
    # the probe stands for a SuperNode itself, created with the operator's identity.
    supernode_labels = {"ppml.dev/job-uid": uid, "app.kubernetes.io/component": "supernode"}
    refused(lambda: probe_port(p, clinic_a, supernode_labels, superlink_ip, CONTROL_PORT),
            403, "Only the ppml-operator may set")
    control = probe_port(p, clinic_a, supernode_labels, superlink_ip, CONTROL_PORT,
                         as_=p.operator_api)
    fleet = probe_port(p, clinic_a, supernode_labels, superlink_ip, FLEET_PORT,
                       as_=p.operator_api)
    assert "REFUSED" in control and "CONNECTED" not in control, control
    assert "CONNECTED" in fleet, fleet  # the labels are the SuperNodes' own: the port is shut

    job = wait_for_job(p, JOB, lambda j: any(
        (condition(j, t) or {}).get("status") == "True" for t in ("Complete", "Failed")),
        timeout=TIMEOUT_S, res=FEDJOBS)
    wall = time.monotonic() - started
    status = job["status"]
    assert (condition(job, "Complete") or {}).get("status") == "True", json.dumps(status)
    rounds = job_doc["spec"]["rounds"]
    assert status["federation"]["roundsCompleted"] == rounds
    # No loss or accuracy on the silos' private records in the analyst's status.
    assert not {"loss", "accuracy", "evalLoss", "trainLoss"} & set(keys(status)), status
    assert "accuracy" not in json.dumps(status["conditions"]).lower()
    # The exact per-round figures are an event on the submitter, in the operator's namespace.
    exact = owner_events(p, SYSTEM, "ExactRoundMetrics")
    exact = [e for e in exact if e["involvedObject"]["name"].startswith(p.ml_team)]
    assert exact and "not differentially private" in exact[0]["message"], exact
    assert not [e for e in p.analyst.get(f"/api/v1/namespaces/{p.ml_team}/events")["items"]
                if e.get("reason") == "ExactRoundMetrics"]

    # Each owner's budget charged exactly once, with what status.privacy says.
    budgets = {b["name"]: b for b in status["privacy"]["budgets"]}
    declared = {(ns, d["metadata"]["name"]) for ns in p.owners for d in docs[ns]
                if d["kind"] == "PrivacyBudget"}
    assert set(budgets) == {f"{ns}/{name}" for ns, name in declared}, budgets
    charged = {}
    for ns, name in sorted(declared):
        budget = p.admin.get(p.path(ns, "privacybudgets", name))
        mine = [c for c in (budget.get("status") or {}).get("charges") or []
                if c["jobUID"] == uid]
        assert len(mine) == 1, (ns, name, mine)
        assert mine[0]["state"] == "Committed"
        assert Decimal(mine[0]["epsilon"]) == Decimal(budgets[f"{ns}/{name}"]["epsilon"])
        assert [e["type"] for e in mine[0]["events"]] == ["LocalDpSgd"]
        assert Decimal(mine[0]["epsilon"]) <= 10
        charged[f"{ns}/{name}"] = mine[0]["epsilon"]

    # The model crosses: delivered onto ml-team's claim, measured there on public digits.
    path = job_doc["spec"]["output"]["model"]["path"]
    assert status["output"]["uri"] == f"pvc://{claim['metadata']['name']}/{path}"
    measured = evaluate_delivered_model(p, claim["metadata"]["name"], path)
    assert measured["accuracy"] >= ACCURACY_THRESHOLD, measured
    print(f"federation across {clinic_a}, {clinic_b}: {rounds} rounds in {wall:.0f} s "
          f"(submitted to Complete); delivered {status['output']['uri']}, accuracy measured in "
          f"ml-team {measured['accuracy']:.4f}; epsilon charged {charged}")

    # Deleting the job removes every child in every namespace; the charges stay committed.
    p.analyst.delete(p.job_path(JOB, FEDJOBS))
    deadline = time.monotonic() + 180
    left: list[str] = []
    gone = False
    while time.monotonic() < deadline:
        left = [f"{ns}/{i.get('kind', path)}:{i['metadata']['name']}"
                for ns in (SYSTEM, *p.namespaces) for path in CHILDREN
                for i in by_uid(p, ns, uid, path)]
        try:
            p.admin.get(p.job_path(JOB, FEDJOBS))
        except ApiError as err:
            gone = err.status == 404
        if gone and not left:
            break
        time.sleep(2)
    assert gone and not left, left
    for key in charged:
        ns, name = key.split("/")
        budget = p.admin.get(p.path(ns, "privacybudgets", name))
        [after] = [c for c in budget["status"]["charges"] if c["jobUID"] == uid]
        assert after["state"] == "Committed"

