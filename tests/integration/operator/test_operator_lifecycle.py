"""PrivateTrainingJob lifecycle on devcluster: admission, waiting, refusal, missing budget."""

from __future__ import annotations

import time
from decimal import Decimal

from op_helpers import NOWHERE, Kube, budget, condition, is_true, job, wait_for

from ppml_operator.reconcile import ledger


def _charges(kube: Kube, name: str = "clinic") -> list[dict]:
    b = kube.get("PrivacyBudget", name) or {}
    return list((b.get("status") or {}).get("charges") or [])


def test_a_job_is_admitted_runs_restricted_pods_and_commits_its_charge(
    kube: Kube
) -> None:
    kube.apply(budget("clinic", epsilon="3"))
    kube.apply(job("digits"))
    done = kube.job_when("digits", "Complete")
    ptj_uid = done["metadata"]["uid"]
    charged = done["status"]["privacy"]["epsilon"]
    assert is_true(done, "Admitted") and condition(done, "Admitted")["reason"] == "Reserved"
    assert is_true(done, "PrivacyVerified")
    [charge] = _charges(kube)
    assert charge["jobUID"] == ptj_uid and charge["state"] == "Committed"
    assert charge["epsilon"] == charged
    b = kube.get("PrivacyBudget", "clinic")
    assert Decimal(b["status"]["spentEpsilon"]) == Decimal(charged)
    # The children carry the labels and the controller owner reference; the namespace enforces
    # the restricted Pod Security Standard, so the pod exists only because it meets it.
    pods = kube.list("Pod", f"ppml.dev/job-uid={ptj_uid}")
    assert len(pods) == 1 and pods[0]["status"]["phase"] == "Succeeded"
    # Every transition is an event on the job.
    reasons = wait_for("events", lambda: {
        e.get("reason") for e in kube.list("Event")
        if (e.get("involvedObject") or {}).get("uid") == ptj_uid
    } >= {"Admitted", "Succeeded"} and True)
    assert reasons
    for kind in ("ConfigMap", "ServiceAccount", "NetworkPolicy", "Job"):
        [child] = kube.list(kind, f"ppml.dev/job-uid={ptj_uid}")
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "ppml-operator"
        assert labels["ppml.dev/job-name"] == "digits"
        [owner] = child["metadata"]["ownerReferences"]
        assert owner["uid"] == ptj_uid and owner["controller"] is True


def test_a_job_that_cannot_be_paid_waits_and_is_admitted_when_budget_is_released(
    kube: Kube
) -> None:
    # One job at noise 1.1 costs 1.89; two compose to 2.27, more than the budget's 2: the
    # second waits while the first holds its reservation. The first never starts (no node
    # matches), so deleting it releases.
    kube.apply(budget("clinic", epsilon="2"))
    kube.apply(job("holder", node_selector=NOWHERE))
    kube.job_when("holder", "Admitted")
    kube.apply(job("waiter"))
    waiting = wait_for(
        "waiter BudgetExhausted",
        lambda: (j := kube.get("PrivateTrainingJob", "waiter"))
        and (condition(j, "Admitted") or {}).get("reason") == "BudgetExhausted" and j,
    )
    message = condition(waiting, "Admitted")["message"]
    assert "budget clinic has epsilon" in message and "this job needs" in message
    assert not kube.list("Pod", f"ppml.dev/job-uid={waiting['metadata']['uid']}")
    kube.delete("PrivateTrainingJob", "holder")
    kube.gone("PrivateTrainingJob", "holder")
    kube.job_when("waiter", "Complete", timeout=90)
    states = sorted(c["state"] for c in _charges(kube))
    assert states == ["Committed", "Released"]


def test_a_job_that_can_never_fit_is_refused(kube: Kube) -> None:
    kube.apply(budget("clinic", epsilon="1"))
    kube.apply(job("greedy", noise="0.6"))
    failed = kube.job_when("greedy", "Failed")
    cond = condition(failed, "Failed")
    assert cond["reason"] == "BudgetNeverFits"
    assert "can never be admitted" in cond["message"]
    assert _charges(kube) == []
    assert not kube.list("Pod", f"ppml.dev/job-uid={failed['metadata']['uid']}")


def test_a_missing_budget_is_a_condition_and_the_job_runs_once_it_exists(
    kube: Kube
) -> None:
    kube.apply(job("orphan", budget_name="later"))
    waiting = wait_for(
        "BudgetNotFound",
        lambda: (j := kube.get("PrivateTrainingJob", "orphan"))
        and (condition(j, "Admitted") or {}).get("reason") == "BudgetNotFound" and j,
    )
    assert "later" in condition(waiting, "Admitted")["message"]
    assert not kube.list("Pod", f"ppml.dev/job-uid={waiting['metadata']['uid']}")
    kube.apply(budget("later"))
    kube.job_when("orphan", "Complete", timeout=90)


def test_reapplying_a_completed_jobs_manifest_charges_nothing(
    kube: Kube
) -> None:
    kube.apply(budget("clinic", epsilon="3"))
    kube.apply(job("gitops"))
    kube.job_when("gitops", "Complete")
    before = kube.get("PrivacyBudget", "clinic")["status"]
    for _ in range(3):
        kube.apply(job("gitops"))
    # Several timer passes (1 s apart) later the ledger still holds the one committed charge.
    time.sleep(4)
    after = kube.get("PrivacyBudget", "clinic")["status"]
    assert after["charges"] == before["charges"]
    assert after["spentEpsilon"] == before["spentEpsilon"]
    assert len(kube.list("Job")) == 1


def test_budget_totals_equal_a_recompute_from_the_ledger_entries(
    kube: Kube
) -> None:
    kube.apply(budget("clinic", epsilon="10"))
    for i in range(3):
        kube.apply(job(f"j{i}"))
    for i in range(3):
        kube.job_when(f"j{i}", "Complete", timeout=90)
    b = kube.get("PrivacyBudget", "clinic")
    totals = ledger.totals(b)
    assert b["status"]["spentEpsilon"] == totals.status_fields()["spentEpsilon"]
    # Composition beats summation: three charges cost less than three times one.
    one = Decimal(b["status"]["charges"][0]["epsilon"])
    assert totals.spent < 3 * one


def test_a_finished_job_is_deleted_after_its_ttl_and_its_charge_stays(kube: Kube) -> None:
    kube.apply(budget("clinic", epsilon="3"))
    kube.apply(job("brief", ttlSecondsAfterFinished=2))
    uid = kube.job_when("brief", "Complete")["metadata"]["uid"]
    kube.gone("PrivateTrainingJob", "brief", timeout=60)
    [charge] = _charges(kube)
    assert charge["jobUID"] == uid and charge["state"] == "Committed"


def test_a_suspended_job_reserves_nothing_until_resumed(kube: Kube) -> None:
    kube.apply(budget("clinic", epsilon="3"))
    kube.apply(job("paused", suspend=True))
    wait_for("Suspended", lambda: is_true(kube.get("PrivateTrainingJob", "paused"), "Suspended"))
    time.sleep(2)
    assert _charges(kube) == []
    kube.apply(job("paused", suspend=False))
    kube.job_when("paused", "Complete", timeout=90)
    assert [c["state"] for c in _charges(kube)] == ["Committed"]


def test_a_job_past_its_deadline_fails_and_its_charge_is_committed(kube: Kube) -> None:
    kube.apply(budget("clinic", epsilon="3"))
    kube.apply(job("slow-deadline", activeDeadlineSeconds=3))
    failed = kube.job_when("slow-deadline", "Failed", timeout=90)
    assert condition(failed, "Failed")["reason"] == "DeadlineExceeded"
    assert [c["state"] for c in _charges(kube)] == ["Committed"]


def test_retries_run_at_most_backoff_limit_plus_one_attempts_all_charged(kube: Kube) -> None:
    kube.apply(budget("clinic", epsilon="5"))
    kube.apply(job("fail-twice", backoffLimit=1))
    failed = kube.job_when("fail-twice", "Failed", timeout=120)
    assert condition(failed, "Failed")["reason"] == "BackoffLimitExceeded"
    uid = failed["metadata"]["uid"]
    assert len(kube.list("Pod", f"ppml.dev/job-uid={uid}")) == 2
    [charge] = _charges(kube)
    assert charge["state"] == "Committed" and charge["attempts"] == 2
    assert charge["events"][0]["steps"] == 2 * failed["status"]["privacy"]["steps"]
