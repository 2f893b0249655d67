"""decide() for FederatedJob: tables of situations with a fixed clock."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from ppml_operator.api.v1alpha1 import FederatedJob
from ppml_operator.reconcile import federated, ledger, lifecycle
from ppml_operator.reconcile.lifecycle import Observed
from ppml_operator.reconcile.plan import Plan
from ppml_operator.render import federated as rf
from ppml_runtime import contract as rc
from ppml_runtime.federated import contract as fc
from ppml_testing.conditions import cond
from ppml_testing.fedjobs import UID, make_fedjob
from ppml_testing.objects import observed, price_of

NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
STAMP = "2026-12-01T10:00:00Z"
REPO = Path(__file__).resolve().parents[3]

Obj = dict[str, Any]


def make_budget(name: str, epsilon: str = "50", delta: str = "1e-3") -> Obj:
    return {"kind": "PrivacyBudget",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": "7"},
            "spec": {"epsilon": epsilon, "delta": delta}}


def observe(job: Obj, budgets: dict[str, Obj | None] | None = None, **kw: Any) -> Observed:
    secret = kw.pop("new_key_secret", None)
    if secret is not None:
        kw["extras"] = {federated.KEY_SECRETS: [secret]}
    return observed(job, budgets or {}, **kw)


def applied(job: Obj, budgets: dict[str, Obj | None], plan: Plan, *, patches: bool = True
            ) -> tuple[Obj, dict[str, Obj | None]]:
    """The job and budgets after ``act`` carried out the plan's writes (and, after the
    creations, its patches of the job: the key Secret's record)."""
    out = dict(budgets)
    for write in [*plan.budget_writes, *plan.late_budget_writes]:
        name = write.budget["metadata"]["name"]
        stored = copy.deepcopy(write.budget)
        stored["status"] = write.status
        out[name] = stored
    job = {**job, "status": plan.status} if plan.status is not None else job
    for kind, name, patch in plan.patches if patches else []:
        assert (kind, name) == ("FederatedJob", job["metadata"]["name"])
        meta = copy.deepcopy(job["metadata"])
        meta.setdefault("annotations", {}).update(patch["metadata"]["annotations"])
        job = {**job, "metadata": meta}
    return job, out


def secret_for(job: Obj) -> Obj | None:
    """What the handler generates while the job does not record its key Secret."""
    made = rf.generate_key_secrets(job, FederatedJob.model_validate(job), NOW)
    return made[0] if made else None


RECORD = ("FederatedJob", "digits", {"metadata": {"annotations": {
    "ppml.dev/keys-secret": "digits-tls"}}})


def admit(job: Obj, budgets: dict[str, Obj | None] | None = None
          ) -> tuple[Obj, dict[str, Obj | None], list[Obj]]:
    """Admit a job: return it as stored, the budgets as stored and the children created."""
    budgets = budgets or {}
    plan = federated.decide(observe(job, budgets, new_key_secret=secret_for(job)), NOW)
    assert cond(plan, "Admitted")["status"] == "True", plan.status
    stored, budgets = applied(job, budgets, plan)
    return stored, budgets, plan.create


def pod(name: str, component: str, phase: str = "Running", node: str | None = "devcluster-node",
        report: str | None = None) -> Obj:
    p: Obj = {"kind": "Pod",
              "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "42",
                           "labels": {"app.kubernetes.io/component": component,
                                      "ppml.dev/job-uid": UID}},
              "spec": {"nodeName": node} if node else {}, "status": {"phase": phase}}
    if report is not None:
        p["status"]["containerStatuses"] = [{"name": "submitter", "state": {"terminated": {
            "exitCode": 0, "message": report, "finishedAt": STAMP}}}]
    return p


def federation_pods(phase: str = "Running", n: int = 3) -> list[Obj]:
    return [pod("digits-superlink", "superlink", phase)] + [
        pod(f"digits-supernode-silo-{i}", "supernode", phase) for i in range(n)]


def submit_job(*conditions: str, reason: str = "", active: int = 1, failed: int = 0,
               succeeded: int = 0) -> Obj:
    return {"kind": "Job", "metadata": {"name": "digits-submit", "uid": "submit-uid"},
            "spec": {}, "status": {
                "active": active, "failed": failed, "succeeded": succeeded,
                "conditions": [{"type": t, "status": "True", "reason": reason,
                                "message": f"job {t.lower()}"} for t in conditions]}}


def report(status: str = "Completed", rounds: int = 2, error: str | None = None) -> str:
    return fc.dump_federation_report(fc.FederationReport(
        status=status, run_id=1234, rounds_completed=rounds, clients=3,
        rounds=[fc.RoundMetrics(round=r, clients=3, train_loss=0.5, eval_loss=0.4,
                                accuracy=round(0.8 + r / 100, 4), seconds=12.5)
                for r in range(1, rounds + 1)],
        final_accuracy=round(0.8 + rounds / 100, 4) if rounds else None, error=error))


def running_children(created: list[Obj], job_obj: Obj | None = None) -> list[Obj]:
    """What the operator observes after the admission's children were created (no pods, and
    never a Secret: it may not read them)."""
    out = [c for c in created if c["kind"] not in ("Pod", "Secret")]
    return [job_obj if (c["kind"] == "Job" and job_obj) else c for c in out]


def central() -> Any:
    """Three silos, SecAgg+, central DP on budget fed-budget, 2 rounds."""
    return make_fedjob().rounds(2).secagg(numShares=3, reconstructionThreshold=2).central()


def local() -> Any:
    """Three silos with local DP, each on its own budget."""
    return make_fedjob().local(budgets=["silo-a", "silo-b", "silo-c"])


def budgets_for(job: Obj, epsilon: str = "50") -> dict[str, Obj | None]:
    p = price_of(job)
    assert isinstance(p, federated.FederatedPrice)
    return {ch.budget: make_budget(ch.budget, epsilon, str(p.delta)) for ch in p.charges}


# --- admission --------------------------------------------------------------------------------


@pytest.mark.parametrize(("situation", "builder", "budgets", "events"), [
    ("no differential privacy charges no budget", make_fedjob(), [], []),
    ("central DP charges the federation's budget once, with the client-level event",
     central(), ["fed-budget"], ["FixedClientSamplingDp"]),
    ("local DP charges each silo's own budget with its DP-SGD event",
     local(), ["silo-a", "silo-b", "silo-c"], ["LocalDpSgd"]),
])
def test_a_new_federation_reserves_on_every_budget_then_admits_and_creates_its_children(
    situation: str, builder: Any, budgets: list[str], events: list[str]
) -> None:
    job = builder.obj()
    plan = federated.decide(observe(job, budgets_for(job), new_key_secret=secret_for(job)), NOW)
    assert [w.budget["metadata"]["name"] for w in plan.budget_writes] == budgets
    for write in plan.budget_writes:
        assert write.operation == "reserve" and write.job_uid == UID
        assert write.budget["metadata"]["resourceVersion"] == "7"  # compare-and-swap base
        [charge] = write.status["charges"]
        assert charge["state"] == "Reserved" and charge["jobKind"] == "FederatedJob"
        assert {e["type"] for e in charge["events"]} == set(events)
    assert cond(plan, "Admitted")["status"] == "True"
    assert cond(plan, "Running")["reason"] == "Pending"
    assert [b["name"] for b in plan.status["privacy"]["budgets"]] == budgets
    assert plan.status["federation"] == {"roundsCompleted": 0, "clientsConnected": 0}
    kinds = [c["kind"] for c in plan.create]
    # One key Secret, before everything that mounts it; recorded on the job after creation.
    assert kinds.count("Secret") == 1 and kinds[-1] == "Job"
    assert kinds.index("Secret") < kinds.index("ConfigMap") < kinds.index("Pod")
    assert plan.patches == [RECORD]
    # The SuperLink now; the SuperNodes once the submitter has started (see below).
    assert [c["metadata"]["name"] for c in plan.create if c["kind"] == "Pod"] == [
        "digits-superlink"]


def test_central_dp_reports_what_was_paid_for_in_status() -> None:
    job = central().obj()
    p = price_of(job)
    assert isinstance(p, federated.FederatedPrice) and p.paid.central is not None
    stored, _, created = admit(job, budgets_for(job))
    privacy = stored["status"]["privacy"]
    assert privacy["steps"] == 2 and privacy["sampleRate"] == "1.0"
    assert privacy["noiseMultiplier"] == "1.0" and privacy["epsilon"] == p.paid.central.epsilon
    [cm] = [c for c in created if c["kind"] == "ConfigMap"]
    paid = fc.FederationConfig.model_validate_json(cm["data"]["config.json"]).privacy.central
    assert paid is not None and paid.charged_epsilon == privacy["epsilon"]


def test_a_second_pass_after_admission_charges_no_budget_again() -> None:
    job = local().obj()
    stored, budgets, created = admit(job, budgets_for(job))
    again = federated.decide(observe(stored, budgets, children=running_children(created),
                                     pods=federation_pods()), NOW)
    assert again.budget_writes == []
    for budget in budgets.values():
        assert budget is not None
        assert [c["state"] for c in budget["status"]["charges"]] == ["Reserved"]


def test_all_or_none_a_budget_that_cannot_pay_releases_what_the_others_hold_and_waits() -> None:
    job = local().obj()
    budgets = budgets_for(job)
    # An earlier pass reserved on silo-a before silo-c filled up (another job took it).
    p = price_of(job)
    assert isinstance(p, federated.FederatedPrice)
    held = ledger.reserve(budgets["silo-a"],
                          lifecycle.charge_request(federated.FEDERATED, job, p.charges[0], p.delta),
                          now=STAMP)
    budgets["silo-a"] = {**budgets["silo-a"], "status": held.status}
    other = make_fedjob("other").local(budgets=["x", "y", "silo-c"]).obj()
    other["metadata"]["uid"] = "other-uid"
    op = price_of(other)
    assert isinstance(op, federated.FederatedPrice)
    c_charge = next(ch for ch in op.charges if ch.budget == "silo-c")
    tight = make_budget("silo-c", epsilon=str(float(c_charge.epsilon) + 0.01), delta="1e-5")
    request = lifecycle.charge_request(federated.FEDERATED, other, c_charge, None)
    taken = ledger.reserve(tight, request, now=STAMP)
    budgets["silo-c"] = {**tight, "status": taken.status}

    plan = federated.decide(observe(job, budgets), NOW)
    assert [(w.operation, w.budget["metadata"]["name"]) for w in plan.budget_writes] == [
        ("release", "silo-a")]
    admitted = cond(plan, "Admitted")
    assert admitted["status"] == "False" and admitted["reason"] == "BudgetExhausted"
    assert "budget silo-c has epsilon" in admitted["message"]
    assert plan.create == []
    assert cond(plan, "Failed") is None


@pytest.mark.parametrize(("situation", "budgets", "reason", "failed", "words"), [
    ("a budget is missing", {"fed-budget": None}, "BudgetNotFound", False, "does not exist"),
    ("the budget could never pay", {"fed-budget": make_budget("fed-budget", "0.5")},
     "BudgetNeverFits", True, "can never be admitted"),
])
def test_a_federation_that_cannot_be_admitted_creates_nothing(
    situation: str, budgets: dict[str, Obj | None], reason: str, failed: bool, words: str
) -> None:
    plan = federated.decide(observe(central().obj(), budgets), NOW)
    assert plan.budget_writes == [] and plan.create == []
    assert cond(plan, "Admitted")["reason"] == reason
    assert words in cond(plan, "Admitted")["message"]
    assert (cond(plan, "Failed") is not None) == failed


@pytest.mark.parametrize(("situation", "builder", "field"), [
    ("authentication without TLS", make_fedjob().tls(False), "spec.authentication.enabled"),
    ("a reconstruction threshold Flower cannot run",
     make_fedjob().secagg(numShares=3, reconstructionThreshold=3), "spec"),
    ("a local batch larger than a silo's training split",
     make_fedjob().local(job_budget="b").with_spec(
         training={"batchSize": 500, "learningRate": "0.1"}),
     "spec.clients[0].data.numRecords"),
])
def test_a_spec_that_cannot_run_fails_before_anything_is_reserved(
    situation: str, builder: Any, field: str
) -> None:
    job = builder.obj()
    plan = federated.decide(observe(job, {"b": make_budget("b")}), NOW)
    assert plan.budget_writes == [] and plan.create == []
    failed = cond(plan, "Failed")
    assert failed["status"] == "True" and failed["reason"] == "InvalidSpec"
    assert failed["message"].startswith(field)
    assert [e.reason for e in plan.events] == ["InvalidSpec"]


def test_a_suspended_federation_waits_unadmitted() -> None:
    job = central().with_spec(suspend=True).obj()
    plan = federated.decide(observe(job, budgets_for(job)), NOW)
    assert plan.budget_writes == [] and plan.create == []
    assert cond(plan, "Suspended")["status"] == "True"
    assert cond(plan, "Admitted")["reason"] == "SuspendedByUser"


# --- running ------------------------------------------------------------------------------------


def test_running_pods_are_counted_as_connected_clients() -> None:
    stored, budgets, created = admit(make_fedjob().obj())
    pods = federation_pods()
    pods[-1]["status"]["phase"] = "Pending"
    plan = federated.decide(observe(stored, budgets, children=running_children(created),
                                    pods=pods), NOW)
    running = cond(plan, "Running")
    assert running["status"] == "True" and running["reason"] == "PodsRunning"
    assert "2 of 3 SuperNodes" in running["message"]
    assert plan.status["federation"]["clientsConnected"] == 2
    assert plan.status["startTime"] == STAMP
    assert plan.create == [] and plan.deletions == []


def submitter_pod(state: str) -> Obj:
    p = pod("digits-submit-abcde", "submitter", "Pending" if state == "waiting" else "Running")
    p["status"]["containerStatuses"] = [{"name": "submitter", "state": {state: {}}}]
    return p


@pytest.mark.parametrize(("situation", "submitter", "created"), [
    ("the submitter still waits for the SuperLink", "waiting", []),
    ("the submitter has started and registers the keys", "running",
     ["digits-supernode-silo-0", "digits-supernode-silo-1", "digits-supernode-silo-2"]),
])
def test_supernodes_are_created_once_the_submitter_has_started(
    situation: str, submitter: str, created: list[str]
) -> None:
    stored, budgets, made = admit(make_fedjob().obj())
    pods = [pod("digits-superlink", "superlink"), submitter_pod(submitter)]
    plan = federated.decide(observe(stored, budgets, children=running_children(
        made, submit_job()), pods=pods), NOW)
    assert [c["metadata"]["name"] for c in plan.create] == created
    assert "0 of 3 SuperNodes" in cond(plan, "Running")["message"]


def test_a_crash_between_admission_and_creation_creates_the_children_next_pass() -> None:
    job = make_fedjob().obj()
    first = federated.decide(observe(job, {}, new_key_secret=secret_for(job)), NOW)
    stored, budgets = applied(job, {}, first, patches=False)  # the status only
    plan = federated.decide(observe(stored, budgets, new_key_secret=secret_for(job)), NOW)
    assert [c["metadata"]["name"] for c in plan.create] == [
        c["metadata"]["name"] for c in first.create]
    assert plan.patches == [RECORD]
    assert plan.budget_writes == []


@pytest.mark.parametrize(("situation", "recorded", "created", "patches"), [
    ("a crash after the Secret's creation, before its record: created again (a 409 is as good "
     "as done) and recorded", False, [("Secret", "digits-tls")], [RECORD]),
    ("a recorded Secret is neither generated nor created again", True, [], []),
])
def test_the_key_secret_is_created_until_the_job_records_it(
    situation: str, recorded: bool, created: list[tuple[str, str]], patches: list[Any]
) -> None:
    job = make_fedjob().obj()
    first = federated.decide(observe(job, {}, new_key_secret=secret_for(job)), NOW)
    stored, budgets = applied(job, {}, first, patches=recorded)
    assert rf.key_secret_recorded(stored) is recorded
    secret = None if recorded else secret_for(stored)  # as the handler does
    children = running_children(first.create, submit_job())
    plan = federated.decide(observe(stored, budgets, children=children, new_key_secret=secret,
                                    pods=[pod("digits-superlink", "superlink")]), NOW)
    assert [(c["kind"], c["metadata"]["name"]) for c in plan.create] == created
    assert plan.patches == patches


def test_a_deleted_supernode_pod_is_recreated_but_never_the_submitter() -> None:
    stored, budgets, created = admit(make_fedjob().obj())
    pods = [p for p in federation_pods() if p["metadata"]["name"] != "digits-supernode-silo-1"]
    plan = federated.decide(observe(stored, budgets, children=running_children(
        created, submit_job()), pods=pods), NOW)
    assert [(c["kind"], c["metadata"]["name"]) for c in plan.create] == [
        ("Pod", "digits-supernode-silo-1")]


def test_the_submitter_job_deleted_mid_run_fails_the_federation_and_commits() -> None:
    job = central().obj()
    stored, budgets, created = admit(job, budgets_for(job))
    stored["status"]["startTime"] = STAMP
    children = [c for c in running_children(created) if c["kind"] != "Job"]
    plan = federated.decide(observe(stored, budgets, children=children,
                                    pods=federation_pods()), NOW)
    assert [w.operation for w in plan.budget_writes] == ["commit"]
    assert cond(plan, "Failed")["reason"] == "PodFailed"
    assert plan.create == []


# --- the end ------------------------------------------------------------------------------------


def finished(builder: Any, submit: Obj, rep: str | None) -> tuple[Plan, dict[str, Obj | None]]:
    job = builder.obj()
    stored, budgets, created = admit(job, budgets_for(job))
    stored["status"]["startTime"] = STAMP
    pods = [*federation_pods(), pod("digits-submit-abcde", "submitter",
                                    "Succeeded" if rep else "Failed", report=rep)]
    plan = federated.decide(observe(stored, budgets, children=running_children(created, submit),
                                    pods=pods), NOW + timedelta(minutes=3))
    return plan, budgets


def test_a_completed_run_commits_every_charge_records_its_rounds_and_tears_down() -> None:
    plan, _ = finished(local(), submit_job("Complete", active=0, succeeded=1), report())
    assert [(w.operation, w.budget["metadata"]["name"]) for w in plan.budget_writes] == [
        ("commit", "silo-a"), ("commit", "silo-b"), ("commit", "silo-c")]
    complete = cond(plan, "Complete")
    assert complete["status"] == "True" and complete["reason"] == "Succeeded"
    # The exact loss and accuracy are computed on private records: never in the job's status
    # or events, only in an event on the submitter Job (the owner's side).
    assert "accuracy" not in complete["message"]
    assert all("0.82" not in e.message for e in plan.events)
    assert cond(plan, "Running")["status"] == "False"
    fed = plan.status["federation"]
    assert fed["roundsCompleted"] == 2 and fed["runId"] == "1234"
    assert fed["rounds"][-1] == {"round": 2, "clients": 3, "wallSeconds": "12.5"}
    [(kind, name, event)] = plan.owner_events
    assert (kind, name, event.reason) == ("Job", "digits-submit", "ExactRoundMetrics")
    assert "round 2: loss 0.4, accuracy 0.82" in event.message
    assert {b["state"] for b in plan.status["privacy"]["budgets"]} == {"Committed"}
    assert plan.status["completionTime"] == "2026-12-01T10:03:00Z"
    deleted = sorted((d.kind, d.name) for d in plan.deletions)
    assert deleted == sorted(
        [("Pod", "digits-superlink")] + [("Pod", f"digits-supernode-silo-{i}") for i in range(3)]
        + [("Secret", "digits-tls")])  # by name: the operator never lists Secrets


@pytest.mark.parametrize(("situation", "submit", "rep", "reason", "words"), [
    ("the run failed", submit_job("Failed", active=0, failed=1, reason="BackoffLimitExceeded"),
     report("Failed", rounds=1, error="run 1234 ended finished:failed after 1 of 2 rounds"),
     "PodFailed", "after 1 of 2 rounds"),
    ("the deadline passed", submit_job("Failed", active=0, failed=1, reason="DeadlineExceeded"),
     None, "DeadlineExceeded", "DeadlineExceeded"),
    ("the submitter exited 0 with fewer rounds than asked",
     submit_job("Complete", active=0, succeeded=1), report("Completed", rounds=1),
     "PodFailed", "did not complete"),
])
def test_a_federation_that_does_not_complete_fails_and_still_commits(
    situation: str, submit: Obj, rep: str | None, reason: str, words: str
) -> None:
    plan, _ = finished(central(), submit, rep)
    assert [w.operation for w in plan.budget_writes] == ["commit"]
    failed = cond(plan, "Failed")
    assert failed["status"] == "True" and failed["reason"] == reason
    # The runtime's own words (they may quote private records) reach only the owner's side: an
    # event on the submitter Job; the job's condition says where to look.
    owner_side = " ".join(e.message for _k, _n, e in plan.owner_events)
    assert words in failed["message"] + " " + owner_side
    assert "run 1234 ended" not in failed["message"]
    assert "events and logs of Job" in failed["message"]
    assert cond(plan, "Complete") is None


def test_a_finished_federation_settles_a_charge_left_reserved_and_finishes_the_teardown() -> None:
    plan, budgets = finished(central(), submit_job("Complete", active=0, succeeded=1), report())
    done_job = {**central().obj(), "status": plan.status}
    # A crash after the status write but before the commit and the deletions.
    again = federated.decide(observe(done_job, budgets, pods=federation_pods()), NOW)
    assert [w.operation for w in again.budget_writes] == ["commit"]
    assert {d.name for d in again.deletions} >= {"digits-superlink"}
    # Once committed, nothing more is written.
    _, settled = applied(done_job, budgets, again)
    third = federated.decide(observe(done_job, settled), NOW)
    assert third.budget_writes == [] and third.status is None


# --- deletion -----------------------------------------------------------------------------------


def test_deleting_a_federation_whose_pods_started_commits_every_charge() -> None:
    job = local().obj()
    stored, budgets, created = admit(job, budgets_for(job))
    plan = federated.decide_deletion(observe(stored, budgets, children=running_children(
        created, submit_job()), pods=federation_pods()), NOW)
    assert [w.operation for w in plan.budget_writes] == ["commit"] * 3
    assert ("Job", "digits-submit") in {(d.kind, d.name) for d in plan.deletions}
    assert plan.done


def test_deleting_a_federation_before_any_pod_started_releases_every_charge_after_the_pods_go(
) -> None:
    job = local().obj()
    stored, budgets, created = admit(job, budgets_for(job))
    children = running_children(created, submit_job(active=0))
    unbound = federation_pods("Pending")
    for p in unbound:
        p["spec"] = {}
    first = federated.decide_deletion(observe(stored, budgets, children=children,
                                              pods=unbound), NOW)
    assert [(d.kind, d.propagation) for d in first.deletions] == [("Job", "Orphan")]
    assert first.budget_writes == [] and not first.done
    second = federated.decide_deletion(observe(stored, budgets, children=[
        c for c in children if c["kind"] != "Job"], pods=unbound), NOW)
    assert {d.resource_version for d in second.deletions} == {"42"}
    assert second.budget_writes == []
    assert [w.operation for w in second.late_budget_writes] == ["release"] * 3


# --- the examples -------------------------------------------------------------------------------

EXAMPLES = sorted((REPO / "examples" / "federated").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_federated_example_is_planned_and_admitted_on_its_budgets(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    budgets: dict[str, Obj | None] = {}
    for doc in docs:
        if doc["kind"] == "PrivacyBudget":
            doc["metadata"].update({"namespace": "ns", "resourceVersion": "1"})
            budgets[doc["metadata"]["name"]] = doc
    [job] = [d for d in docs if d["kind"] == "FederatedJob"]
    job["metadata"].update({"namespace": "ns", "uid": UID, "generation": 1})
    p = price_of(job)
    assert isinstance(p, federated.FederatedPrice), p
    assert {ch.budget for ch in p.charges} == set(budgets)  # every budget shipped is charged
    plan = federated.decide(observe(job, budgets, new_key_secret=secret_for(job)), NOW)
    assert cond(plan, "Admitted")["status"] == "True", plan.status
    assert len(plan.budget_writes) == len(budgets)
    assert [c["kind"] for c in plan.create].count("Pod") == 1  # SuperNodes come later


# --- suspend after admission --------------------------------------------------------------------


def _with_spec(job: Obj, **spec: Any) -> Obj:
    return {**job, "spec": {**job["spec"], **spec}}


def test_suspending_a_running_federation_stops_its_pods_and_keeps_the_reservation() -> None:
    job = central().obj()
    stored, budgets, created = admit(job, budgets_for(job))
    stored = _with_spec(stored, suspend=True)
    plan = federated.decide(observe(stored, budgets, children=running_children(
        created, submit_job()), pods=federation_pods()), NOW)
    assert ("Job", "digits-submit", {"spec": {"suspend": True}}) in plan.patches
    assert sorted(d.name for d in plan.deletions if d.kind == "Pod") == sorted(
        p["metadata"]["name"] for p in federation_pods())
    assert plan.create == [] and plan.budget_writes == []  # nothing recreated, nothing released
    assert cond(plan, "Suspended")["reason"] == "SuspendedByUser"
    assert cond(plan, "Running")["status"] == "False"
    assert plan.status["privacy"]["budgets"][0]["state"] == "Reserved"


def test_a_federation_suspended_after_it_started_is_never_resumed() -> None:
    job = central().obj()
    stored, budgets, created = admit(job, budgets_for(job))
    stored = _with_spec(stored, suspend=True)
    plan = federated.decide(observe(stored, budgets, children=running_children(
        created, submit_job()), pods=federation_pods()), NOW)
    stored = {**stored, "status": plan.status}
    assert stored["status"]["startTime"]  # its pods had been bound: it started
    resumed = _with_spec(stored, suspend=False)
    suspended_submit = {**submit_job(active=0), "spec": {"suspend": True}}
    plan = federated.decide(observe(resumed, budgets, children=running_children(
        created, suspended_submit), pods=[]), NOW)
    assert plan.create == []  # no SuperLink, no SuperNode: round 1 would run again, unpaid
    assert not any(p[2] == {"spec": {"suspend": False}} for p in plan.patches)
    assert cond(plan, "Suspended")["reason"] == "ResumeNotPaid"
    assert [e.reason for e in plan.events] == ["ResumeNotPaid"]
    assert plan.budget_writes == []


def test_a_federation_suspended_before_any_pod_started_resumes() -> None:
    job = central().obj()
    stored, budgets, created = admit(job, budgets_for(job))
    stored = _with_spec(stored, suspend=True)
    plan = federated.decide(observe(stored, budgets, children=running_children(
        created, submit_job(active=0)), pods=[]), NOW)
    assert plan.create == [] and "startTime" not in plan.status
    stored = _with_spec({**stored, "status": plan.status}, suspend=False)
    suspended_submit = {**submit_job(active=0), "spec": {"suspend": True}}
    plan = federated.decide(observe(stored, budgets, children=running_children(
        created, suspended_submit), pods=[]), NOW)
    assert ("Job", "digits-submit", {"spec": {"suspend": False}}) in plan.patches
    assert [c["metadata"]["name"] for c in plan.create] == ["digits-superlink"]
    assert cond(plan, "Suspended")["reason"] == "Resumed"


# --- live progress: the ServerApp's gauges while the run goes on --------------------------------


def live(done: int, seconds: dict[int, float], total: int = 5) -> fc.FederationProgress:
    return fc.FederationProgress(rounds_completed=done, total_rounds=total, round_seconds=seconds)


def running(rounds: int = 5, federation: Obj | None = None, **kw: Any) -> Plan:
    """One pass over a running federation, its status holding ``federation`` beforehand."""
    stored, budgets, created = admit(make_fedjob().rounds(rounds).obj())
    if federation is not None:
        stored["status"]["federation"] = federation
    return federated.decide(observe(stored, budgets, children=running_children(
        created, submit_job()), pods=federation_pods(), **kw), NOW)


LIVE = [
    ("no scrape yet: nothing but the admission's zero", None, None,
     {"roundsCompleted": 0, "clientsConnected": 3}),
    ("two of five rounds done", None, live(2, {1: 3.25, 2: 4.5}),
     {"roundsCompleted": 2, "clientsConnected": 3,
      "rounds": [{"round": 1, "wallSeconds": "3.25"}, {"round": 2, "wallSeconds": "4.5"}]}),
    ("a later round joins the rounds already recorded",
     {"roundsCompleted": 2, "rounds": [{"round": 1, "wallSeconds": "3.25"},
                                       {"round": 2, "wallSeconds": "4.5"}]},
     live(3, {2: 4.5, 3: 1.0}),
     {"roundsCompleted": 3, "clientsConnected": 3,
      "rounds": [{"round": 1, "wallSeconds": "3.25"}, {"round": 2, "wallSeconds": "4.5"},
                 {"round": 3, "wallSeconds": "1.0"}]}),
    ("a stale scrape never takes the count back",
     {"roundsCompleted": 3, "rounds": [{"round": 3, "wallSeconds": "1.0"}]}, live(1, {}),
     {"roundsCompleted": 3, "clientsConnected": 3,
      "rounds": [{"round": 3, "wallSeconds": "1.0"}]}),
    ("nothing beyond spec.rounds is believed", None, live(9, {4: 1.0, 6: 2.0}, total=9),
     {"roundsCompleted": 5, "clientsConnected": 3, "rounds": [{"round": 4, "wallSeconds": "1.0"}]}),
    ("a trainer's snapshot is not a federation's", None, rc.ProgressSnapshot(step=3),
     {"roundsCompleted": 0, "clientsConnected": 3}),
]


@pytest.mark.parametrize(("before", "progress", "federation"),
                         [(b, p, f) for _, b, p, f in LIVE], ids=[i for i, *_ in LIVE])
def test_a_running_federation_shows_its_live_rounds(before, progress, federation) -> None:
    plan = running(federation=before, progress=progress)
    assert plan.status["federation"] == federation
    assert f"{federation['roundsCompleted']} of 5 rounds completed" in cond(
        plan, "Running")["message"]


def test_live_rounds_keep_the_newest_hundred_oldest_first() -> None:
    plan = running(rounds=300, progress=live(250, {r: 1.0 for r in range(101, 251)}, 300),
                   federation={"roundsCompleted": 100,
                               "rounds": [{"round": r, "wallSeconds": "2.0"}
                                          for r in range(1, 101)]})
    rounds = plan.status["federation"]["rounds"]
    assert [r["round"] for r in rounds] == list(range(151, 251))


def test_the_final_report_wins_over_the_live_gauges() -> None:
    job = make_fedjob().obj()
    stored, budgets, created = admit(job)
    stored["status"]["startTime"] = STAMP
    stored["status"]["federation"] = {"roundsCompleted": 1,
                                      "rounds": [{"round": 1, "wallSeconds": "99.0"}]}
    pods = [*federation_pods(), pod("digits-submit-abcde", "submitter", "Succeeded",
                                    report=report())]
    plan = federated.decide(observe(
        stored, budgets, children=running_children(
            created, submit_job("Complete", active=0, succeeded=1)), pods=pods,
        progress=live(1, {1: 99.0}, total=2)), NOW)
    assert cond(plan, "Complete")["status"] == "True"
    assert plan.status["federation"]["roundsCompleted"] == 2
    assert plan.status["federation"]["rounds"] == [
        {"round": r, "clients": 3, "wallSeconds": "12.5"} for r in (1, 2)]


def superlink_pod(ip: str | None = "10.0.0.7", phase: str = "Running",
                  namespace: str = "ns", name: str = "digits-superlink") -> Obj:
    p = pod(name, "superlink", phase)
    p["metadata"]["namespace"] = namespace
    if ip:
        p["status"]["podIP"] = ip
    return p


SCRAPED = [
    ("the running SuperLink's ServerApp", [superlink_pod()], "http://10.0.0.7:9097/metrics"),
    ("a SuperLink still pending", [superlink_pod(phase="Pending")], None),
    ("a SuperLink without an IP yet", [superlink_pod(ip=None)], None),
    ("a look-alike in another namespace", [superlink_pod(namespace="clinic-a")], None),
    ("a look-alike of another name", [superlink_pod(name="digits-superlink-x")], None),
    ("a SuperNode is never scraped",
     [{**pod("digits-supernode-silo-0", "supernode"), "status": {
         "phase": "Running", "podIP": "10.0.0.8"}}], None),
]


@pytest.mark.parametrize(("pods", "url"), [(p, u) for _, p, u in SCRAPED],
                         ids=[i for i, *_ in SCRAPED])
def test_the_operator_scrapes_only_the_federations_own_superlink(pods, url) -> None:
    assert federated.FEDERATED.progress_url(make_fedjob().obj(), pods) == url


def test_the_federation_kind_parses_its_own_gauges() -> None:
    text = (f"{fc.METRIC_ROUNDS_COMPLETED} 1\n{fc.METRIC_TOTAL_ROUNDS} 2\n"
            f'{fc.METRIC_ROUND_SECONDS}{{round="1"}} 0.5\n')
    assert federated.FEDERATED.parse_progress(text) == live(1, {1: 0.5}, total=2)
