"""decide() for PrivateTrainingJob: tables of situations with a fixed clock."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ppml_operator.reconcile import ledger, lifecycle, training
from ppml_operator.reconcile.lifecycle import Observed
from ppml_testing.conditions import cond
from ppml_testing.objects import (
    PTJ_UID,
    STAMP,
    batch_job,
    budget,
    observed,
    price_of,
    trainer_pod,
    training_job,
)

NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
UID = PTJ_UID


def make_job(name: str = "digits", **spec: Any) -> dict:
    return training_job(name, **spec)


def make_budget(epsilon: str = "3") -> dict:
    return budget(epsilon=epsilon)


def reserved(budget: dict, job: dict) -> dict:
    p = price_of(job)
    assert isinstance(p, training.Price)
    [charge] = p.charges
    out = ledger.reserve(budget, lifecycle.charge_request(training.TRAINING, job, charge, p.delta),
                         now=STAMP)
    assert out.status is not None
    return {**budget, "status": out.status}


def admitted(job: dict) -> dict:
    """The job after the plan that admitted it was applied."""
    plan = training.decide(observe(job, make_budget()), NOW)
    assert plan.status is not None
    return {**job, "status": plan.status}


pod = trainer_pod


def observe(job: dict, budget: dict | None = None, **kw: Any) -> Observed:
    if budget is None:
        return observed(job, {"clinic": None}, **kw)
    return observed(job, budget, **kw)


# --- admission --------------------------------------------------------------------------------


def test_a_new_job_on_a_budget_with_room_reserves_then_admits_then_creates_its_children() -> None:
    job = make_job()
    plan = training.decide(observe(job, make_budget()), NOW)
    [write] = plan.budget_writes
    assert write.operation == "reserve" and write.job_uid == UID
    assert write.budget["metadata"]["resourceVersion"] == "5"  # the compare-and-swap's base
    assert cond(plan, "Admitted")["status"] == "True"
    assert plan.status["privacy"]["epsilon"] == price_of(job).epsilon
    assert [c["kind"] for c in plan.create] == [
        "ServiceAccount", "ConfigMap", "NetworkPolicy", "Job"]


@pytest.mark.parametrize(("situation", "budget", "ahead", "reason", "words"), [
    ("budget missing", None, (), "BudgetNotFound", "does not exist"),
    ("budget exhausted by another reservation", "exhausted", (), "BudgetExhausted",
     "budget clinic has epsilon"),
    ("an older job waits on the same budget", "roomy", ("older-job",), "BudgetExhausted",
     "older-job"),
])
def test_a_job_that_cannot_be_admitted_waits_without_children(
    situation: str, budget: str | None, ahead: tuple[str, ...], reason: str, words: str
) -> None:
    job = make_job()
    b = None
    if budget == "roomy":
        b = make_budget("10")
    elif budget == "exhausted":
        other = make_job("other")
        other["metadata"]["uid"] = "other-uid"
        b = reserved(make_budget("2"), other)
    plan = training.decide(observe(job, b, waiting_ahead=ahead), NOW)
    c = cond(plan, "Admitted")
    assert c["status"] == "False" and c["reason"] == reason and words in c["message"]
    assert plan.budget_writes == [] and plan.create == []


def test_a_job_costing_more_than_the_budget_can_ever_pay_is_refused() -> None:
    job = make_job(privacy={"noiseMultiplier": "0.8", "delta": "1e-5"})
    plan = training.decide(observe(job, make_budget("1")), NOW)
    assert cond(plan, "Failed")["reason"] == "BudgetNeverFits"
    assert plan.budget_writes == [] and plan.create == []


def test_a_spec_that_cannot_be_paid_for_fails_naming_the_field() -> None:
    job = make_job(privacy={"targetEpsilon": "0.0001", "delta": "1e-5"})
    observed = observe(job, make_budget())
    assert isinstance(observed.price, training.InvalidSpec)
    plan = training.decide(observed, NOW)
    failed = cond(plan, "Failed")
    assert failed["reason"] == "InvalidSpec" and "spec.privacy.targetEpsilon" in failed["message"]


def test_a_suspended_new_job_reserves_nothing() -> None:
    plan = training.decide(observe(make_job(suspend=True), make_budget()), NOW)
    assert cond(plan, "Suspended")["status"] == "True"
    assert plan.budget_writes == [] and plan.create == []


def test_a_reservation_stored_before_a_crash_is_used_without_writing_again() -> None:
    job = make_job()
    plan = training.decide(observe(job, reserved(make_budget(), job)), NOW)
    assert plan.budget_writes == []
    assert cond(plan, "Admitted")["status"] == "True" and len(plan.create) == 4


def test_retries_are_charged_up_front_with_or_without_a_checkpoint() -> None:
    """A checkpoint journal on a claim the submitter writes is no proof that a retry resumes:
    a missing journal means a fresh start, so every attempt is charged (issue 13, item 2)."""
    single = price_of(make_job())
    plain = price_of(make_job(backoffLimit=2))
    checkpointed = price_of(make_job(backoffLimit=2, checkpoint={"claimName": "ckpt"}))
    assert plain.attempts == 3 and checkpointed.attempts == 3
    assert plain.events[0]["steps"] == 3 * single.events[0]["steps"]
    assert checkpointed.epsilon == plain.epsilon and float(plain.epsilon) > float(single.epsilon)


# --- running ----------------------------------------------------------------------------------


def test_running_pods_mark_running_and_record_the_start() -> None:
    job = admitted(make_job())
    plan = training.decide(observe(job, reserved(make_budget(), job),
                                   children={"Job": batch_job(active=1)}, pods=[pod()]), NOW)
    assert cond(plan, "Running")["status"] == "True"
    assert plan.status["startTime"] == STAMP
    assert plan.budget_writes == [] and plan.create == [
        c for c in plan.create if c["kind"] != "Job"]


def test_a_completed_trainer_commits_first_then_marks_complete_with_the_report() -> None:
    job = admitted(make_job())
    charged = price_of(job).epsilon
    report = ('{"status":"ok","stepsCompleted":23,"epsilon":%s,"testAccuracy":0.93,'
              '"testLoss":0.2,"testRecords":360,"releasedTestAccuracy":0.91}'
              % (float(charged) * 0.98))
    plan = training.decide(observe(
        job, reserved(make_budget(), job),
        children={"Job": batch_job(conditions=("Complete",), succeeded=1)},
        pods=[pod("Succeeded", report=report)]), NOW)
    [write] = plan.budget_writes
    assert write.operation == "commit"
    assert [c["state"] for c in write.status["charges"]] == ["Committed"]
    assert cond(plan, "Complete")["status"] == "True"
    assert cond(plan, "PrivacyVerified")["status"] == "True"
    # Only the DP release reaches the job's status; the exact figures go to the data owner,
    # as an event on the trainer Job (where the pods that touched the data are).
    assert plan.status["metrics"]["testAccuracy"] == "0.91"
    assert "0.93" not in json.dumps(plan.status) and "0.93" not in json.dumps(
        [e.message for e in plan.events])
    [(kind, _name, exact)] = plan.owner_events
    assert kind == "Job" and exact.reason == "ExactTestMetrics" and "0.93" in exact.message
    assert plan.status["completionTime"] == STAMP


def test_a_failed_trainer_tells_the_job_where_to_look_and_the_owner_what_happened() -> None:
    job = admitted(make_job())
    secret = "cell value 'John Doe, 1962-04-01' in column name is not numeric"
    report = json.dumps({"status": "error", "error": secret})
    plan = training.decide(observe(
        job, reserved(make_budget(), job),
        children={"Job": batch_job(conditions=("Failed",), failed=1)},
        pods=[pod("Failed", report=report)]), NOW)
    failed = cond(plan, "Failed")
    assert failed["status"] == "True" and "John Doe" not in failed["message"]
    assert "events and logs of Job" in failed["message"]
    assert not any("John Doe" in e.message for e in plan.events)
    assert any("John Doe" in e.message for _k, _n, e in plan.owner_events)


def test_a_runtime_measuring_more_than_charged_raises_a_warning() -> None:
    job = admitted(make_job())
    report = '{"status":"ok","stepsCompleted":23,"epsilon":99.0}'
    plan = training.decide(observe(
        job, reserved(make_budget(), job),
        children={"Job": batch_job(conditions=("Complete",), succeeded=1)},
        pods=[pod("Succeeded", report=report)]), NOW)
    assert cond(plan, "PrivacyVerified")["reason"] == "MeasuredEpsilonExceedsCharge"
    assert any(e.type == "Warning" for e in plan.events)


@pytest.mark.parametrize(("situation", "reason", "backoff", "expected"), [
    ("pod failed, no retries", "BackoffLimitExceeded", 0, "PodFailed"),
    ("retries used up", "BackoffLimitExceeded", 2, "BackoffLimitExceeded"),
    ("deadline passed", "DeadlineExceeded", 0, "DeadlineExceeded"),
])
def test_a_failed_trainer_commits_and_fails_the_job(
    situation: str, reason: str, backoff: int, expected: str
) -> None:
    job = admitted(make_job(backoffLimit=backoff))
    plan = training.decide(observe(
        job, reserved(make_budget("10"), job),
        children={"Job": batch_job(conditions=("Failed",), failed=1, reason=reason)},
        pods=[pod("Failed")]), NOW)
    assert [w.operation for w in plan.budget_writes] == ["commit"]
    assert cond(plan, "Failed")["reason"] == expected


def test_a_trainer_job_deleted_after_it_ran_is_never_recreated() -> None:
    job = admitted(make_job())
    running = training.decide(observe(job, reserved(make_budget(), job),
                                      children={"Job": batch_job(active=1)}, pods=[pod()]), NOW)
    job = {**job, "status": running.status}
    plan = training.decide(observe(job, reserved(make_budget(), job)), NOW)
    assert all(c["kind"] != "Job" for c in plan.create)
    assert cond(plan, "Failed")["status"] == "True"
    assert [w.operation for w in plan.budget_writes] == ["commit"]


def test_children_missing_after_a_crash_at_admission_are_created() -> None:
    job = admitted(make_job())
    plan = training.decide(observe(job, reserved(make_budget(), job)), NOW)
    assert [c["kind"] for c in plan.create][-1] == "Job"
    assert plan.budget_writes == []


def test_a_budget_being_deleted_takes_no_new_charge() -> None:
    b = make_budget()
    b["metadata"]["deletionTimestamp"] = STAMP
    plan = training.decide(observe(make_job(), b), NOW)
    assert plan.budget_writes == [] and plan.create == []
    admitted_ = cond(plan, "Admitted")
    assert admitted_["reason"] == "BudgetNotFound" and "being deleted" in admitted_["message"]


def test_a_trainer_suspended_after_it_started_is_never_resumed() -> None:
    """Issue 13, item 2: resuming would train from step 0 again, unpaid, and repeatably."""
    job = admitted(make_job())
    job["status"]["startTime"] = STAMP  # the trainer ran before spec.suspend was set
    job["spec"]["suspend"] = False  # ... and now the submitter asks to resume it
    plan = training.decide(observe(job, reserved(make_budget(), job),
                                   children={"Job": batch_job(suspend=True)}), NOW)
    assert plan.patches == []  # the trainer Job stays suspended
    suspended = cond(plan, "Suspended")
    assert suspended["status"] == "True" and suspended["reason"] == "ResumeNotPaid"
    assert "not paid for" in suspended["message"]
    assert [e.reason for e in plan.events] == ["ResumeNotPaid"]
    # A job that never started may be resumed: nothing touched the data yet.
    fresh = admitted(make_job())
    plan = training.decide(observe(fresh, reserved(make_budget(), fresh),
                                   children={"Job": batch_job(suspend=True)}), NOW)
    assert plan.patches == [("Job", "digits-trainer", {"spec": {"suspend": False}})]


def test_suspending_an_admitted_job_suspends_its_trainer_and_keeps_the_reservation() -> None:
    job = admitted(make_job())
    job["spec"]["suspend"] = True
    plan = training.decide(observe(job, reserved(make_budget(), job),
                                   children={"Job": batch_job(active=1)}, pods=[pod()]), NOW)
    assert plan.patches == [("Job", "digits-trainer", {"spec": {"suspend": True}})]
    assert cond(plan, "Suspended")["status"] == "True"
    assert plan.budget_writes == []


# --- finished ---------------------------------------------------------------------------------


def _finished(job: dict, **spec: Any) -> dict:
    job = admitted(job)
    done = training.decide(observe(
        job, reserved(make_budget(), job),
        children={"Job": batch_job(conditions=("Complete",), succeeded=1)},
        pods=[pod("Succeeded")]), NOW)
    return {**job, "status": done.status}


def test_a_finished_job_whose_commit_was_lost_in_a_crash_commits_only() -> None:
    job = _finished(make_job())
    plan = training.decide(observe(job, reserved(make_budget(), job)), NOW)
    assert [w.operation for w in plan.budget_writes] == ["commit"]
    assert plan.create == [] and plan.status is None


def test_a_finished_job_is_deleted_once_its_ttl_expires() -> None:
    job = _finished(make_job(ttlSecondsAfterFinished=60))
    b = make_budget()
    early = training.decide(observe(job, b), NOW + timedelta(seconds=30))
    assert not early.delete_self
    late = training.decide(observe(job, b), NOW + timedelta(seconds=61))
    assert late.delete_self


def test_a_finished_job_is_never_charged_again() -> None:
    job = _finished(make_job())
    b = make_budget()
    b = reserved(b, job)
    b = {**b, "status": ledger.commit(b, UID, now=STAMP).status}
    plan = training.decide(observe(job, b), NOW)
    assert plan.budget_writes == [] and plan.create == []


# --- deletion ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("situation", "children", "pods", "was_admitted", "expect"), [
    ("reserved, trainer Job exists, pods pending", {"Job": batch_job(active=1)},
     [pod("Pending", node=None)], True, "orphan-delete"),
    ("reserved, Job gone, orphaned pods never bound", {}, [pod("Pending", node=None)], True,
     "delete-pods-then-release"),
    ("reserved, a pod was bound to a node", {"Job": batch_job(active=1)},
     [pod("Pending")], True, "commit"),
    ("reserved, trainer counted a terminated pod", {"Job": batch_job(failed=1)}, [], True,
     "commit"),
    ("reserved, never admitted", {}, [], False, "release"),
    ("reserved, admitted, nothing left to judge by", {}, [], True, "commit"),
    # Issue 13, item 2: the runner's active and ready counts are evidence too.
    ("reserved, the trainer counts a ready pod", {"Job": {**batch_job(active=1),
     "status": {"active": 1, "ready": 1}}}, [pod("Pending", node=None)], True, "commit"),
    ("reserved, the trainer counts an active pod the label does not find (relabelled)",
     {"Job": batch_job(active=2)}, [pod("Pending", node=None)], True, "commit"),
])
def test_deleting_a_job_settles_its_reservation(
    situation: str, children: dict, pods: list, was_admitted: bool, expect: str
) -> None:
    job = admitted(make_job()) if was_admitted else make_job()
    job = copy.deepcopy(job)
    job["metadata"]["deletionTimestamp"] = STAMP
    plan = training.decide_deletion(
        observe(job, reserved(make_budget(), job), children=children, pods=pods), NOW)
    ops = [w.operation for w in plan.budget_writes]
    late = [w.operation for w in plan.late_budget_writes]
    if expect == "orphan-delete":
        assert plan.deletions[0].propagation == "Orphan" and not plan.done and not ops
    elif expect == "delete-pods-then-release":
        assert plan.deletions[0].resource_version == "42"  # the precondition
        assert late == ["release"] and not ops
    elif expect == "commit":
        assert ops == ["commit"] and not late
    else:
        assert ops == ["release"]


def test_deleting_a_job_whose_charge_is_committed_settles_nothing() -> None:
    job = _finished(make_job())
    b = reserved(make_budget(), job)
    b = {**b, "status": ledger.commit(b, UID, now=STAMP).status}
    plan = training.decide_deletion(observe(job, b), NOW)
    assert plan.budget_writes == [] and plan.late_budget_writes == [] and plan.done


def test_live_progress_from_the_runtime_goes_into_status() -> None:
    from ppml_runtime.contract import ProgressSnapshot

    job = admitted(make_job())
    snapshot = ProgressSnapshot(step=7, epoch=0.3, loss=0.52, epsilon=0.61, total_steps=23)
    plan = training.decide(observe(job, reserved(make_budget(), job),
                                   children={"Job": batch_job(active=1)}, pods=[pod()],
                                   progress=snapshot), NOW)
    # The batch loss (on private records, not noised) never reaches status.
    assert plan.status["progress"] == {"step": 7, "totalSteps": 23, "epoch": 0,
                                       "epsilonSoFar": "0.61"}
