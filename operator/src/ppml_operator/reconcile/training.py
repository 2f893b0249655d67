"""``decide`` for PrivateTrainingJob: from what was observed to what to do, purely.

One level-triggered function per situation: :func:`decide` for a live job (create, update,
resume and the timer all call it) and :func:`decide_deletion` for a job being deleted. Both take
the job, the budget and the children exactly as observed from the API server (never a cache),
and the clock as an argument; they return a :class:`~ppml_operator.reconcile.plan.Plan`.

The lifecycle: validate and price (done by the caller, passed in as :class:`Price`) → reserve on
the budget (compare-and-swap, in the same plan as the Admitted condition and the children, which
``act`` only creates once the reservation is stored) → track the trainer Job and its pods →
commit when it ends → honour suspend, deadline (the trainer Job's own), TTL and backoff. See
``docs/ledger.md`` for why each step is where it is.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from ppml_operator.api import conditions as c
from ppml_operator.api.v1alpha1 import PrivateTrainingJob
from ppml_operator.reconcile import ledger
from ppml_operator.reconcile.plan import BudgetWrite, Deletion, Event, Plan
from ppml_operator.render.trainer import Paid, RenderSettings, names, render_children
from ppml_runtime import contract as rc

Obj = dict[str, Any]

KIND = "PrivateTrainingJob"

WAIT_REQUEUE_SECONDS = 5.0
"""How soon a waiting job (budget exhausted or missing) is looked at again."""

RUNNING_REQUEUE_SECONDS = 5.0
"""How soon an admitted, unfinished job is looked at again (pods are polled, not watched)."""


@dataclass(frozen=True)
class Price:
    """What the job costs, computed by the accounting library before admission.

    Attributes
    ----------
    events
        Serialised privacy events covering every attempt charged.
    epsilon
        The standalone epsilon of the whole charge at ``delta``.
    delta
        The job's delta.
    noise_multiplier, sample_rate, steps
        What one attempt runs with (the runtime is configured with exactly these).
    accountant
        ``RDP`` or ``PLD``.
    attempts
        How many attempts the events cover.

    """

    events: tuple[Obj, ...]
    epsilon: str
    delta: str
    noise_multiplier: str
    sample_rate: str
    steps: int
    accountant: str = "RDP"
    attempts: int = 1


@dataclass(frozen=True)
class InvalidSpec:
    """The spec cannot be honoured; ``field`` names the offending field."""

    field: str
    message: str


@dataclass(frozen=True)
class TrainingObserved:
    """Everything ``decide`` looks at, read fresh from the API server.

    Attributes
    ----------
    job
        The PrivateTrainingJob object.
    budget
        The PrivacyBudget its ``spec.budgetRef`` names, None when it does not exist.
    price
        The job's cost, or :class:`InvalidSpec` when it cannot be computed.
    children
        The job's existing children by kind (``Job``, ``ConfigMap``, ...).
    pods
        The trainer pods of this job (by the job-uid label).
    waiting_ahead
        Names of older jobs waiting on the same budget without a charge: this job waits
        behind them (admission in arrival order).
    settings
        Rendering settings.

    """

    job: Obj
    budget: Obj | None
    price: Price | InvalidSpec
    children: Mapping[str, Obj] = field(default_factory=dict)
    pods: Sequence[Obj] = ()
    waiting_ahead: Sequence[str] = ()
    settings: RenderSettings = field(default_factory=RenderSettings)
    keep_committed: int = ledger.DEFAULT_KEEP_COMMITTED
    progress: rc.ProgressSnapshot | None = None
    all_children: bool = True
    budget_read: bool = True


# ---------------------------------------------------------------------------------------------
# Observations
# ---------------------------------------------------------------------------------------------


def _meta(job: Obj) -> Obj:
    meta: Obj = job["metadata"]
    return meta


def _status(job: Obj) -> Obj:
    return copy.deepcopy(job.get("status") or {})


def _conds(status: Obj) -> list[Obj]:
    conds: list[Obj] = status.setdefault("conditions", [])
    return conds


def is_finished(job: Obj) -> bool:
    """Return whether the job has a terminal condition (Complete or Failed)."""
    conds = (job.get("status") or {}).get("conditions")
    return c.is_true(conds, c.COMPLETE) or c.is_true(conds, c.FAILED)


def was_admitted(job: Obj) -> bool:
    """Return whether the job was ever admitted (children may exist)."""
    status = job.get("status") or {}
    return c.is_true(status.get("conditions"), c.ADMITTED) or bool(
        (status.get("privacy") or {}).get("budgets")
    )


def _pod_started(pod: Obj) -> bool:
    """Return whether a pod may have touched data (bound to a node counts as started)."""
    phase = (pod.get("status") or {}).get("phase", "Pending")
    return bool((pod.get("spec") or {}).get("nodeName")) or phase != "Pending"


def _job_counters(batch_job: Obj | None) -> tuple[int, int, int]:
    status = (batch_job or {}).get("status") or {}
    uncounted = status.get("uncountedTerminatedPods") or {}
    failed = int(status.get("failed") or 0) + len(uncounted.get("failed") or [])
    succeeded = int(status.get("succeeded") or 0) + len(uncounted.get("succeeded") or [])
    return int(status.get("active") or 0), failed, succeeded


def pods_may_have_started(observed: TrainingObserved) -> bool:
    """Judge, conservatively, whether any pod of the job may ever have started.

    Evidence: ``status.startTime`` on the job (recorded as soon as a started pod is seen), a
    pod bound to a node or past Pending, or the trainer Job counting a terminated pod.
    """
    status = observed.job.get("status") or {}
    if status.get("startTime") or int(status.get("attempts") or 0) > 0:
        return True
    if any(_pod_started(p) for p in observed.pods):
        return True
    _, failed, succeeded = _job_counters(observed.children.get("Job"))
    return failed + succeeded > 0


def _job_condition(batch_job: Obj, type_: str) -> Obj | None:
    for cond in (batch_job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def _report(pods: Sequence[Obj]) -> rc.TrainingReport | None:
    """Return the newest rank-0 termination report among the pods, if any parses."""
    best: tuple[str, rc.TrainingReport] | None = None
    for pod in pods:
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        if annotations.get("batch.kubernetes.io/job-completion-index", "0") != "0":
            continue
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            message = term.get("message")
            if not message:
                continue
            try:
                report = rc.parse_report(message)
            except (ValidationError, ValueError):
                continue
            finished = str(term.get("finishedAt") or "")
            if best is None or finished > best[0]:
                best = (finished, report)
    return best[1] if best else None


# ---------------------------------------------------------------------------------------------
# decide
# ---------------------------------------------------------------------------------------------


def _set(status: Obj, type_: str, value: bool, reason: str, message: str, *, now: datetime,
         gen: int | None) -> None:
    c.set_condition(
        _conds(status),
        {"type": type_, "status": value, "reason": reason, "message": message},
        now=now,
        generation=gen,
    )


def _finish_plan(plan: Plan, job: Obj, status: Obj) -> Plan:
    status["observedGeneration"] = _meta(job).get("generation")
    if status != (job.get("status") or {}):
        plan.status = status
    return plan


def _charge_request(job: Obj, price: Price) -> ledger.ChargeRequest:
    meta = _meta(job)
    return ledger.ChargeRequest(
        job_uid=meta["uid"],
        job_kind=KIND,
        job_name=meta["name"],
        job_namespace=meta["namespace"],
        events=price.events,
        epsilon=price.epsilon,
        attempts=price.attempts,
        delta=price.delta,
    )


def _privacy_status(price: Price, budget_name: str, state: str) -> Obj:
    return {
        "epsilon": price.epsilon,
        "delta": price.delta,
        "noiseMultiplier": price.noise_multiplier,
        "sampleRate": price.sample_rate,
        "steps": price.steps,
        "accountant": price.accountant,
        "budgets": [{"name": budget_name, "epsilon": price.epsilon, "state": state}],
    }


def _set_budget_state(status: Obj, state: str) -> None:
    for entry in (status.get("privacy") or {}).get("budgets") or []:
        entry["state"] = state


def _ttl_plan(plan: Plan, job: Obj, status: Obj, now: datetime) -> None:
    ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
    finished_at = status.get("completionTime")
    if ttl is None or not finished_at:
        return
    due = datetime.fromisoformat(str(finished_at).replace("Z", "+00:00")) + timedelta(seconds=ttl)
    if now >= due:
        plan.delete_self = True
        plan.events.append(
            Event("Normal", "Expired", f"Deleted after ttlSecondsAfterFinished={ttl}")
        )
    else:
        plan.requeue_after = max((due - now).total_seconds(), 1.0)


def decide(observed: TrainingObserved, now: datetime) -> Plan:
    """Decide one reconcile pass of a live (not deleting) PrivateTrainingJob.

    Parameters
    ----------
    observed
        The job, its budget, its price and its children, freshly read.
    now
        The clock.

    Returns
    -------
    Plan
        What to write, create, patch and delete, in order, and when to look again.

    """
    job = observed.job
    meta = _meta(job)
    gen = meta.get("generation")
    status = _status(job)
    plan = Plan()
    charge = ledger.find_charge(observed.budget, meta["uid"]) if observed.budget else None

    if is_finished(job):
        # Settle a charge left Reserved by a crash between the job's end and the commit.
        if charge is not None and charge.get("state") == ledger.RESERVED and observed.budget:
            _commit(plan, observed.budget, meta["uid"], now, observed.keep_committed)
        _ttl_plan(plan, job, status, now)
        return _finish_plan(plan, job, status)

    if isinstance(observed.price, InvalidSpec):
        message = f"{observed.price.field}: {observed.price.message}"
        _set(status, c.ADMITTED, False, c.INVALID_SPEC, message, now=now, gen=gen)
        _set(status, c.FAILED, True, c.INVALID_SPEC, message, now=now, gen=gen)
        status["completionTime"] = c.format_time(now)
        plan.events.append(Event("Warning", c.INVALID_SPEC, message))
        return _finish_plan(plan, job, status)
    price = observed.price

    if not was_admitted(job):
        return _finish_plan(
            _decide_admission(observed, price, charge, status, plan, now), job, status
        )
    return _finish_plan(_decide_running(observed, price, charge, status, plan, now), job, status)


def _commit(
    plan: Plan, budget: Obj, uid: str, now: datetime, keep: int = ledger.DEFAULT_KEEP_COMMITTED
) -> None:
    outcome = ledger.commit(budget, uid, now=c.format_time(now), keep=keep)
    if outcome.status is not None:
        plan.budget_writes.append(
            BudgetWrite(budget, outcome.status, "commit", uid, outcome.message)
        )


def _decide_admission(
    observed: TrainingObserved,
    price: Price,
    charge: Obj | None,
    status: Obj,
    plan: Plan,
    now: datetime,
) -> Plan:
    job = observed.job
    meta = _meta(job)
    gen = meta.get("generation")
    spec = job.get("spec") or {}
    budget_name = str((spec.get("budgetRef") or {}).get("name", ""))
    if spec.get("suspend"):
        _set(status, c.SUSPENDED, True, c.SUSPENDED_BY_USER,
             "spec.suspend is true: the job waits; set it to false to admit it", now=now, gen=gen)
        _set(status, c.ADMITTED, False, c.SUSPENDED_BY_USER,
             "spec.suspend is true: the job is not admitted while suspended", now=now, gen=gen)
        return plan
    if c.get_condition(status.get("conditions"), c.SUSPENDED) is not None:
        _set(status, c.SUSPENDED, False, c.RESUMED, "spec.suspend is false", now=now, gen=gen)
    budget = observed.budget
    if budget is None:
        message = (
            f"PrivacyBudget {budget_name} named by spec.budgetRef.name does not exist in "
            f"namespace {meta['namespace']}; create it or fix the reference"
        )
        if _set_changed(status, c.ADMITTED, False, c.BUDGET_NOT_FOUND, message, now, gen):
            plan.events.append(Event("Warning", c.BUDGET_NOT_FOUND, message))
        plan.requeue_after = WAIT_REQUEUE_SECONDS
        return plan
    state = charge.get("state") if charge else None
    if state == ledger.COMMITTED:
        # Spent already but never marked admitted: pods may have run. Never run it again.
        message = f"budget {budget_name} already holds a committed charge for this job"
        _set(status, c.FAILED, True, c.BUDGET_EXHAUSTED, message, now=now, gen=gen)
        status["completionTime"] = c.format_time(now)
        return plan
    if state != ledger.RESERVED:
        if observed.waiting_ahead:
            ahead = ", ".join(observed.waiting_ahead[:3])
            message = (
                f"waiting behind older jobs on budget {budget_name} ({ahead}): jobs are "
                "admitted in arrival order"
            )
            if _set_changed(status, c.ADMITTED, False, c.BUDGET_EXHAUSTED, message, now, gen):
                plan.events.append(Event("Normal", c.BUDGET_EXHAUSTED, message))
            plan.requeue_after = WAIT_REQUEUE_SECONDS
            return plan
        outcome = ledger.reserve(budget, _charge_request(job, price), now=c.format_time(now))
        if outcome.result == ledger.Result.NEVER_FITS:
            _set(status, c.ADMITTED, False, c.BUDGET_NEVER_FITS, outcome.message, now=now,
                 gen=gen)
            _set(status, c.FAILED, True, c.BUDGET_NEVER_FITS, outcome.message, now=now, gen=gen)
            status["completionTime"] = c.format_time(now)
            plan.events.append(Event("Warning", c.BUDGET_NEVER_FITS, outcome.message))
            return plan
        if outcome.result == ledger.Result.EXHAUSTED:
            if _set_changed(status, c.ADMITTED, False, c.BUDGET_EXHAUSTED, outcome.message, now,
                            gen):
                plan.events.append(Event("Normal", c.BUDGET_EXHAUSTED, outcome.message))
            plan.requeue_after = WAIT_REQUEUE_SECONDS
            return plan
        if outcome.status is not None:
            plan.budget_writes.append(
                BudgetWrite(budget, outcome.status, "reserve", meta["uid"], outcome.message)
            )
            plan.events.append(Event("Normal", "Reserved", outcome.message))
    # The reservation is stored (or will be, first in this plan): admit and create children.
    message = (
        f"reserved epsilon {price.epsilon} at delta {price.delta} on budget {budget_name}"
    )
    _set(status, c.ADMITTED, True, c.RESERVED, message, now=now, gen=gen)
    _set(status, c.RUNNING, False, c.PENDING, "the trainer pods are being created", now=now,
         gen=gen)
    status["privacy"] = _privacy_status(price, budget_name, ledger.RESERVED)
    plan.events.append(Event("Normal", "Admitted", message))
    plan.create.extend(_children(observed, price))
    plan.requeue_after = RUNNING_REQUEUE_SECONDS
    return plan


def _set_changed(
    status: Obj, type_: str, value: bool, reason: str, message: str, now: datetime,
    gen: int | None,
) -> bool:
    return c.set_condition(
        _conds(status),
        {"type": type_, "status": value, "reason": reason, "message": message},
        now=now,
        generation=gen,
    )


def _children(observed: TrainingObserved, price: Price) -> list[Obj]:
    ptj = PrivateTrainingJob.model_validate(observed.job)
    paid = Paid(
        noise_multiplier=price.noise_multiplier,
        sample_rate=price.sample_rate,
        steps=price.steps,
        delta=price.delta,
        epsilon=price.epsilon,
        accountant=price.accountant,
    )
    return render_children(observed.job, ptj, paid, observed.settings)


def _decide_running(
    observed: TrainingObserved,
    price: Price,
    charge: Obj | None,
    status: Obj,
    plan: Plan,
    now: datetime,
) -> Plan:
    job = observed.job
    meta = _meta(job)
    gen = meta.get("generation")
    spec = job.get("spec") or {}
    batch_job = observed.children.get("Job")
    job_name = names(meta["name"])["job"]
    plan.requeue_after = RUNNING_REQUEUE_SECONDS
    started = pods_may_have_started(observed)
    if started and not status.get("startTime"):
        status["startTime"] = c.format_time(now)
    observed_before = c.get_condition(status.get("conditions"), c.RUNNING) is not None and (
        (c.get_condition(status.get("conditions"), c.RUNNING) or {}).get("reason") != c.PENDING
        or started
    )

    if batch_job is None:
        if observed_before or started:
            # The trainer Job existed and is gone (deleted by someone): never run it again.
            message = f"the trainer Job {job_name} was deleted before the job finished"
            return _end(observed, status, plan, now, success=False, reason=c.POD_FAILED,
                        message=message, charge=charge)
        # Children not (all) created yet: a crash between admission and creation.
        plan.create.extend(_children(observed, price))
        return plan

    # Children that should exist: recreate the cheap ones if they are missing (never the Job).
    if observed.all_children:
        missing = [
            child for child in _children(observed, price)
            if child["kind"] != "Job" and child["kind"] not in observed.children
        ]
        plan.create.extend(missing)

    active, failed, succeeded = _job_counters(batch_job)
    status["attempts"] = max(int(status.get("attempts") or 0), failed + succeeded + active
                             if started else 0)
    status["failed"] = failed
    done = _job_condition(batch_job, "Complete")
    failed_cond = _job_condition(batch_job, "Failed")
    report = _report(observed.pods)
    if report is not None:
        _record_report(status, report, price, plan, now, gen)
        status["progress"] = {**(status.get("progress") or {}), "step": report.steps_completed,
                              "totalSteps": price.steps}
    if done is not None:
        return _end(observed, status, plan, now, success=True, reason=c.SUCCEEDED,
                    message="every worker finished; the charge is committed", charge=charge)
    if failed_cond is not None:
        reason = {
            "DeadlineExceeded": c.DEADLINE_EXCEEDED,
            "BackoffLimitExceeded": c.BACKOFF_LIMIT_EXCEEDED if spec.get("backoffLimit")
            else c.POD_FAILED,
        }.get(str(failed_cond.get("reason")), c.POD_FAILED)
        detail = (report.error if report and report.error else failed_cond.get("message")) or ""
        message = f"the trainer failed ({failed_cond.get('reason')}): {detail}".strip()
        return _end(observed, status, plan, now, success=False, reason=reason, message=message,
                    charge=charge)

    # Suspend: the trainer Job's own suspend stops its pods; the reservation is kept.
    want_suspend = bool(spec.get("suspend"))
    if bool((batch_job.get("spec") or {}).get("suspend")) != want_suspend:
        plan.patches.append(("Job", job_name, {"spec": {"suspend": want_suspend}}))
    if want_suspend:
        _set(status, c.SUSPENDED, True, c.SUSPENDED_BY_USER,
             "spec.suspend is true: the pods are stopped, the reservation kept", now=now, gen=gen)
    elif c.get_condition(status.get("conditions"), c.SUSPENDED) is not None:
        _set(status, c.SUSPENDED, False, c.RESUMED, "spec.suspend is false", now=now, gen=gen)

    running = [
        p for p in observed.pods if (p.get("status") or {}).get("phase") == "Running"
    ]
    if observed.progress is not None:
        status["progress"] = progress_status(observed.progress, price.steps)
    if running:
        _set(status, c.RUNNING, True, c.PODS_RUNNING,
             f"{len(running)} of {spec.get('runtime', {}).get('workers', 1)} trainer pods are "
             "running", now=now, gen=gen)
    else:
        _set(status, c.RUNNING, False, c.PENDING,
             "waiting for the trainer pods to start", now=now, gen=gen)
    return plan


def progress_status(progress: rc.ProgressSnapshot, steps: int) -> Obj:
    """Return ``status.progress`` from the runtime's live gauges."""
    out: Obj = {"step": progress.step, "totalSteps": progress.total_steps or steps,
                "epoch": int(progress.epoch)}
    if progress.loss is not None:
        out["loss"] = f"{progress.loss:.6g}"
    if progress.epsilon is not None:
        out["epsilonSoFar"] = f"{progress.epsilon:.6g}"
    return out


def _record_report(
    status: Obj, report: rc.TrainingReport, price: Price, plan: Plan, now: datetime,
    gen: int | None,
) -> None:
    metrics: Obj = {}
    if report.test_accuracy is not None:
        metrics["testAccuracy"] = repr(report.test_accuracy)
    if report.test_loss is not None:
        metrics["testLoss"] = repr(report.test_loss)
    if report.wall_seconds is not None:
        metrics["wallSeconds"] = repr(report.wall_seconds)
    if report.device:
        metrics["device"] = report.device
    if metrics:
        status["metrics"] = metrics
    if report.epsilon is None:
        return
    privacy = status.setdefault("privacy", {})
    measured = repr(report.epsilon)
    privacy["measuredEpsilon"] = measured
    if Decimal(measured) > Decimal(price.epsilon):
        message = (
            f"the runtime measured epsilon {measured}, more than the {price.epsilon} charged"
        )
        if _set_changed(status, c.PRIVACY_VERIFIED, False, c.MEASURED_EXCEEDS_CHARGE, message,
                        now, gen):
            plan.events.append(Event("Warning", c.MEASURED_EXCEEDS_CHARGE, message))
    else:
        _set(status, c.PRIVACY_VERIFIED, True, c.MEASURED_WITHIN_CHARGE,
             f"the runtime measured epsilon {measured}, within the {price.epsilon} charged",
             now=now, gen=gen)


def _end(
    observed: TrainingObserved,
    status: Obj,
    plan: Plan,
    now: datetime,
    *,
    success: bool,
    reason: str,
    message: str,
    charge: Obj | None,
) -> Plan:
    """Commit the charge first, then mark the job finished (the order is the protocol)."""
    if not observed.budget_read:
        raise ValueError("a job cannot be finished from a pass that did not read its budget")
    gen = _meta(observed.job).get("generation")
    if observed.budget is not None and charge is not None:
        _commit(plan, observed.budget, _meta(observed.job)["uid"], now,
                observed.keep_committed)
    _set(status, c.RUNNING, False, reason, message, now=now, gen=gen)
    _set(status, c.COMPLETE if success else c.FAILED, True, reason, message, now=now, gen=gen)
    status["completionTime"] = c.format_time(now)
    _set_budget_state(status, ledger.COMMITTED)
    plan.events.append(Event("Normal" if success else "Warning", reason, message))
    plan.requeue_after = None
    _ttl_plan(plan, observed.job, status, now)
    return plan


# ---------------------------------------------------------------------------------------------
# decide_deletion
# ---------------------------------------------------------------------------------------------


def decide_deletion(observed: TrainingObserved, now: datetime) -> Plan:
    """Decide one pass of deleting a job: settle its charge before the finalizer goes.

    A reservation is released only when no pod can have started: the trainer Job is first
    deleted with ``Orphan`` propagation (so it creates no more pods and its pods stay visible),
    then each remaining pod, never bound to a node, is deleted with a resourceVersion
    precondition (a pod bound meanwhile fails the precondition); the release is written only
    after all of those deletions succeeded. Any evidence of a started pod commits instead,
    and so does doubt (no Job, no pods, but the job was admitted).

    Returns
    -------
    Plan
        ``done`` is True when the finalizer may be removed after the plan succeeds.

    """
    job = observed.job
    uid = _meta(job)["uid"]
    plan = Plan()
    budget = observed.budget
    charge = ledger.find_charge(budget, uid) if budget else None
    if budget is None or charge is None or charge.get("state") != ledger.RESERVED:
        return plan
    stamp = c.format_time(now)
    if pods_may_have_started(observed):
        _commit(plan, budget, uid, now, observed.keep_committed)
        batch_job = observed.children.get("Job")
        if batch_job is not None:  # stop the pods now rather than after the garbage collector
            plan.deletions.append(Deletion("Job", _meta(batch_job)["name"]))
        plan.events.append(Event("Normal", c.DELETED, "Deleted while running: charge committed"))
        return plan
    batch_job = observed.children.get("Job")
    if batch_job is not None:
        plan.deletions.append(
            Deletion("Job", _meta(batch_job)["name"], propagation="Orphan",
                     uid=_meta(batch_job).get("uid"))
        )
        plan.done = False
        plan.requeue_after = 1.0
        return plan
    if observed.pods:
        for pod in observed.pods:
            pm = _meta(pod)
            plan.deletions.append(
                Deletion("Pod", pm["name"], uid=pm.get("uid"),
                         resource_version=pm.get("resourceVersion"))
            )
        outcome = ledger.release(budget, uid, now=stamp)
        if outcome.status is not None:
            plan.late_budget_writes.append(
                BudgetWrite(budget, outcome.status, "release", uid, outcome.message)
            )
        return plan
    if was_admitted(job):
        # No trainer Job and no pods, yet children may have existed: when in doubt, commit.
        _commit(plan, budget, uid, now, observed.keep_committed)
        return plan
    outcome = ledger.release(budget, uid, now=stamp)
    if outcome.status is not None:
        plan.budget_writes.append(BudgetWrite(budget, outcome.status, "release", uid,
                                              outcome.message))
    return plan


# ---------------------------------------------------------------------------------------------
# price
# ---------------------------------------------------------------------------------------------


def attempts_charged(job: Obj) -> int:
    """Return how many attempts a job's charge covers (the retry policy, ``docs/ledger.md``).

    Without a checkpoint every retry starts training over, so the charge covers
    ``backoffLimit + 1`` attempts up front; with a checkpoint the runtime resumes from its
    checkpointed accountant and never exceeds the steps of one attempt, so one is charged.
    """
    spec = job.get("spec") or {}
    if spec.get("checkpoint"):
        return 1
    return int(spec.get("backoffLimit") or 0) + 1


def price(job: Obj) -> Price | InvalidSpec:
    """Compute what a PrivateTrainingJob costs, with the accounting library.

    Pure but not cheap (calibrating a target epsilon takes a while): callers memoize it by
    job UID and generation.

    Parameters
    ----------
    job
        The PrivateTrainingJob object.

    Returns
    -------
    Price or InvalidSpec
        The cost covering every charged attempt, or the field that makes the spec unpayable.

    """
    from ppml_operator.api.errors import InvalidSpecError
    from ppml_operator.privacy import Accountant, epsilon_of, event_from_dict
    from ppml_operator.privacy.decimals import format_cost
    from ppml_operator.reconcile.cost import job_charges

    try:
        charges = job_charges(job)
    except InvalidSpecError as err:
        return InvalidSpec(err.field, err.message)
    charge = charges[0]
    attempts = attempts_charged(job)
    events = ledger.repeat_events(charge.event_dicts(), attempts)
    epsilon = charge.epsilon
    if attempts > 1:
        epsilon = epsilon_of(
            [event_from_dict(e) for e in events], charge.delta, Accountant(charge.accountant)
        )
    return Price(
        events=events,
        epsilon=format_cost(epsilon),
        delta=str(charge.delta),
        noise_multiplier=str(charge.noise_multiplier),
        sample_rate=rc.exact_decimal_str(float(str(charge.sample_rate))),
        steps=int(charge.steps or 0),
        accountant=str(charge.accountant.value).upper(),
        attempts=attempts,
    )
