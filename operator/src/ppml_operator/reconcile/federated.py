"""``decide`` for FederatedJob: from what was observed to what to do, purely.

The lifecycle follows PrivateTrainingJob's (:mod:`ppml_operator.reconcile.training`): validate
and price (the caller passes a :class:`FederatedPrice` in) → reserve on *every* budget the
federation charges, all or none (a budget that cannot pay makes the job release what it holds
and wait) → admit and create the SuperLink and the submitter, then the SuperNodes once the
submitter has started (the SuperLink is up and their keys are being registered) → track the
submitter Job and the pods → commit every charge when it ends, then tear the federation down
(SuperLink and SuperNode pods, the key Secret).

Key material lives in one Secret that the operator creates and never reads (no get, list or
watch on Secrets): the caller generates it while the job does not record it (the
``ppml.dev/keys-secret`` annotation); ``decide`` creates it before anything that mounts it and
then patches the job to record it; a create that finds it already there (an earlier pass that
stopped before the patch) is as good as done. ``decide_deletion`` settles the ledger of a
deleted job: release only when no pod can have started, commit otherwise.

Central DP charges ``spec.budgetRef`` with the client-level event; local DP charges each silo's
budget (or the job's) with the silos' DP-SGD events; privacy mode None charges nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ppml_operator.api import conditions as c
from ppml_operator.api.errors import InvalidSpecError
from ppml_operator.api.v1alpha1 import FederatedJob
from ppml_operator.reconcile import ledger
from ppml_operator.reconcile.plan import BudgetWrite, Deletion, Event, Plan
from ppml_operator.reconcile.training import (
    InvalidSpec,
    is_finished,
    was_admitted,
)
from ppml_operator.reconcile.training import _job_condition as job_condition
from ppml_operator.reconcile.training import _job_counters as job_counters
from ppml_operator.reconcile.training import _pod_started as pod_started
from ppml_operator.reconcile.training import _ttl_plan as ttl_plan
from ppml_operator.render import federated as rf
from ppml_operator.render.trainer import Paid, RenderSettings
from ppml_runtime.federated import contract as fc

Obj = dict[str, Any]

KIND = "FederatedJob"

WAIT_REQUEUE_SECONDS = 5.0
"""How soon a waiting federation (budget exhausted or missing) is looked at again."""

RUNNING_REQUEUE_SECONDS = 5.0
"""How soon an admitted, unfinished federation is looked at again (pods are polled)."""

MAX_ROUNDS_IN_STATUS = 100
"""How many rounds' metrics ``status.federation.rounds`` keeps (the newest)."""


@dataclass(frozen=True)
class BudgetCharge:
    """What the federation charges one budget (serialised events, standalone epsilon)."""

    budget: str
    events: tuple[Obj, ...]
    epsilon: str


@dataclass(frozen=True)
class FederatedPrice:
    """What the federation costs, computed by the accounting library before admission.

    Attributes
    ----------
    charges
        One per budget charged, sorted by budget name; empty under privacy mode None.
    paid
        The parameters the runtime is configured with (exactly those paid for).
    delta, accountant
        The job's delta (None under mode None) and accountant (``RDP`` or ``PLD``).

    """

    charges: tuple[BudgetCharge, ...] = ()
    paid: rf.FederationPaid = field(default_factory=rf.FederationPaid)
    delta: str | None = None
    accountant: str = "RDP"


@dataclass(frozen=True)
class FederatedObserved:
    """Everything ``decide`` looks at, read fresh from the API server.

    Attributes
    ----------
    job
        The FederatedJob object.
    budgets
        Each budget the price charges, by name: the object, or None when it does not exist.
    price
        The federation's cost, or :class:`InvalidSpec` when it cannot be computed.
    children
        The job's existing non-pod children (by the job-uid label), any kind but Secret (the
        operator never reads Secrets).
    pods
        The job's pods: SuperLink, SuperNodes and the submitter's.
    new_key_secret
        The rendered key Secret with freshly generated keys, when the job does not record it as
        created yet (generation is random, so the caller does it, not ``decide``); None otherwise.
    settings
        Rendering settings.

    """

    job: Obj
    budgets: Mapping[str, Obj | None]
    price: FederatedPrice | InvalidSpec
    children: Sequence[Obj] = ()
    pods: Sequence[Obj] = ()
    new_key_secret: Obj | None = None
    settings: RenderSettings = field(default_factory=RenderSettings)

    def child(self, kind: str, name: str) -> Obj | None:
        """Return the observed child of that kind and name, if any."""
        for obj in self.children:
            if obj.get("kind") == kind and (obj.get("metadata") or {}).get("name") == name:
                return obj
        return None


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _meta(job: Obj) -> Obj:
    meta: Obj = job["metadata"]
    return meta


def _set(status: Obj, type_: str, value: bool, reason: str, message: str, *, now: datetime,
         gen: int | None) -> bool:
    conds: list[Obj] = status.setdefault("conditions", [])
    return c.set_condition(
        conds, {"type": type_, "status": value, "reason": reason, "message": message},
        now=now, generation=gen,
    )


def _finish(plan: Plan, job: Obj, status: Obj) -> Plan:
    status["observedGeneration"] = _meta(job).get("generation")
    if status != (job.get("status") or {}):
        plan.status = status
    return plan


def _component(obj: Obj) -> str:
    return str(((obj.get("metadata") or {}).get("labels") or {}).get(
        "app.kubernetes.io/component", ""))


def _phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase", "Pending"))


def _submit_job(observed: FederatedObserved) -> Obj | None:
    return observed.child("Job", rf.names(_meta(observed.job)["name"])["submit"])


def pods_may_have_started(observed: FederatedObserved) -> bool:
    """Judge, conservatively, whether any pod of the federation may ever have started."""
    status = observed.job.get("status") or {}
    if status.get("startTime"):
        return True
    if any(pod_started(p) for p in observed.pods):
        return True
    _, failed, succeeded = job_counters(_submit_job(observed))
    return failed + succeeded > 0


def submitter_report(pods: Sequence[Obj]) -> fc.FederationReport | None:
    """Return the newest FederationReport among the submitter pods' termination messages."""
    best: tuple[str, fc.FederationReport] | None = None
    for pod in pods:
        if _component(pod) != rf.SUBMITTER:
            continue
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            message = term.get("message")
            if not message:
                continue
            try:
                report = fc.parse_federation_report(message)
            except (ValidationError, ValueError):
                continue
            finished = str(term.get("finishedAt") or "")
            if best is None or finished > best[0]:
                best = (finished, report)
    return best[1] if best else None


def _charge_request(
    job: Obj, charge: BudgetCharge, delta: str | None = None
) -> ledger.ChargeRequest:
    meta = _meta(job)
    return ledger.ChargeRequest(
        job_uid=meta["uid"], job_kind=KIND, job_name=meta["name"],
        job_namespace=meta["namespace"], events=charge.events, epsilon=charge.epsilon,
        delta=delta,
    )


def _privacy_status(price: FederatedPrice, state: str) -> Obj:
    privacy: Obj = {
        "accountant": price.accountant,
        "budgets": [{"name": ch.budget, "epsilon": ch.epsilon, "state": state}
                    for ch in price.charges],
    }
    if price.delta is not None:
        privacy["delta"] = price.delta
    central = price.paid.central
    if central is not None:
        privacy.update({
            "epsilon": central.epsilon,
            "noiseMultiplier": central.noise_multiplier,
            "sampleRate": central.sample_rate,
            "steps": central.steps,
        })
    elif len(price.charges) == 1:
        privacy["epsilon"] = price.charges[0].epsilon
    return privacy


def _set_budget_state(status: Obj, state: str) -> None:
    for entry in (status.get("privacy") or {}).get("budgets") or []:
        entry["state"] = state


def _children(observed: FederatedObserved, price: FederatedPrice) -> list[Obj]:
    fj = FederatedJob.model_validate(
        {k: v for k, v in observed.job.items() if k != "status"}
    )
    return rf.render_children(observed.job, fj, price.paid, observed.settings,
                              observed.new_key_secret)


def _commit_all(plan: Plan, observed: FederatedObserved, now: datetime) -> None:
    uid = _meta(observed.job)["uid"]
    for name in sorted(observed.budgets):
        budget = observed.budgets[name]
        if budget is None:
            continue
        outcome = ledger.commit(budget, uid, now=c.format_time(now))
        if outcome.status is not None:
            plan.budget_writes.append(
                BudgetWrite(budget, outcome.status, "commit", uid, outcome.message))


def _release_held(plan: Plan, observed: FederatedObserved, now: datetime, *,
                  late: bool = False) -> None:
    uid = _meta(observed.job)["uid"]
    for name in sorted(observed.budgets):
        budget = observed.budgets[name]
        if budget is None:
            continue
        outcome = ledger.release(budget, uid, now=c.format_time(now))
        if outcome.status is not None:
            write = BudgetWrite(budget, outcome.status, "release", uid, outcome.message)
            (plan.late_budget_writes if late else plan.budget_writes).append(write)


def _teardown(plan: Plan, observed: FederatedObserved) -> None:
    """Delete what keeps running or holds keys once the federation is over.

    The key Secret is deleted by name whenever the job records it (it is never read, so never
    known to be gone; a second delete answers 404, which is fine).
    """
    for pod in observed.pods:
        if _component(pod) in (rf.SUPERLINK, rf.SUPERNODE) and not _meta(pod).get(
                "deletionTimestamp"):
            plan.deletions.append(Deletion("Pod", _meta(pod)["name"], uid=_meta(pod).get("uid")))
    if rf.key_secret_recorded(observed.job):
        plan.deletions.append(Deletion("Secret", rf.names(_meta(observed.job)["name"])[
            "tlsSecret"]))


def _record_key_secret(plan: Plan, job: Obj) -> Plan:
    """Record on the job that its key Secret exists, once a plan creates it.

    ``act`` patches after every creation succeeded (a 409 counts: the Secret is there), so the
    record never precedes the Secret.
    """
    if any(child["kind"] == "Secret" for child in plan.create):
        plan.patches.append((KIND, _meta(job)["name"], rf.key_secret_recorded_patch(job)))
    return plan


# ---------------------------------------------------------------------------------------------
# decide
# ---------------------------------------------------------------------------------------------


def decide(observed: FederatedObserved, now: datetime) -> Plan:
    """Decide one reconcile pass of a live (not deleting) FederatedJob.

    Parameters
    ----------
    observed
        The job, its budgets, its price and its children, freshly read.
    now
        The clock.

    Returns
    -------
    Plan
        What to write, create, patch and delete, in order, and when to look again.

    """
    job = observed.job
    gen = _meta(job).get("generation")
    status = copy.deepcopy(job.get("status") or {})
    plan = Plan()

    if is_finished(job):
        # Settle charges left Reserved by a crash between the end and the commit; finish the
        # teardown a crash may have interrupted.
        _commit_all(plan, observed, now)
        _teardown(plan, observed)
        ttl_plan(plan, job, status, now)
        return _finish(plan, job, status)

    if isinstance(observed.price, InvalidSpec):
        return _finish(_invalid(plan, status, observed.price, now, gen), job, status)
    price = observed.price
    try:
        children = _children(observed, price)
    except InvalidSpecError as err:
        return _finish(_invalid(plan, status, InvalidSpec(err.field, err.message), now, gen),
                       job, status)

    if not was_admitted(job):
        plan = _admission(observed, price, children, status, plan, now)
    else:
        plan = _running(observed, price, children, status, plan, now)
    return _finish(_record_key_secret(plan, job), job, status)


def _invalid(plan: Plan, status: Obj, invalid: InvalidSpec, now: datetime,
             gen: int | None) -> Plan:
    message = f"{invalid.field}: {invalid.message}"
    _set(status, c.ADMITTED, False, c.INVALID_SPEC, message, now=now, gen=gen)
    _set(status, c.FAILED, True, c.INVALID_SPEC, message, now=now, gen=gen)
    status["completionTime"] = c.format_time(now)
    plan.events.append(Event("Warning", c.INVALID_SPEC, message))
    return plan


def _admission(
    observed: FederatedObserved,
    price: FederatedPrice,
    children: list[Obj],
    status: Obj,
    plan: Plan,
    now: datetime,
) -> Plan:
    job = observed.job
    meta = _meta(job)
    gen = meta.get("generation")
    spec = job.get("spec") or {}
    if spec.get("suspend"):
        _set(status, c.SUSPENDED, True, c.SUSPENDED_BY_USER,
             "spec.suspend is true: the federation waits; set it to false to admit it",
             now=now, gen=gen)
        _set(status, c.ADMITTED, False, c.SUSPENDED_BY_USER,
             "spec.suspend is true: the federation is not admitted while suspended",
             now=now, gen=gen)
        return plan
    if c.get_condition(status.get("conditions"), c.SUSPENDED) is not None:
        _set(status, c.SUSPENDED, False, c.RESUMED, "spec.suspend is false", now=now, gen=gen)

    missing = [ch.budget for ch in price.charges if observed.budgets.get(ch.budget) is None]
    if missing:
        message = (
            f"PrivacyBudget {', '.join(missing)} charged by this federation does not exist in "
            f"namespace {meta['namespace']}; create it or fix the budgetRef"
        )
        if _set(status, c.ADMITTED, False, c.BUDGET_NOT_FOUND, message, now=now, gen=gen):
            plan.events.append(Event("Warning", c.BUDGET_NOT_FOUND, message))
        plan.requeue_after = WAIT_REQUEUE_SECONDS
        return plan

    writes: list[BudgetWrite] = []
    blocked: list[ledger.Outcome] = []
    for charge in price.charges:
        budget = observed.budgets[charge.budget]
        assert budget is not None
        outcome = ledger.reserve(
            budget, _charge_request(job, charge, price.delta), now=c.format_time(now)
        )
        if outcome.result == ledger.Result.ALREADY_COMMITTED:
            message = f"budget {charge.budget} already holds a committed charge for this job"
            _set(status, c.FAILED, True, c.BUDGET_EXHAUSTED, message, now=now, gen=gen)
            status["completionTime"] = c.format_time(now)
            return plan
        if outcome.result in (ledger.Result.EXHAUSTED, ledger.Result.NEVER_FITS):
            blocked.append(outcome)
        elif outcome.status is not None:
            writes.append(BudgetWrite(budget, outcome.status, "reserve", meta["uid"],
                                      outcome.message))
    if blocked:
        # All or none: give back what an earlier pass reserved (no pod was ever created).
        _release_held(plan, observed, now)
        never = [o for o in blocked if o.result == ledger.Result.NEVER_FITS]
        message = "; ".join(o.message for o in (never or blocked))
        if never:
            _set(status, c.ADMITTED, False, c.BUDGET_NEVER_FITS, message, now=now, gen=gen)
            _set(status, c.FAILED, True, c.BUDGET_NEVER_FITS, message, now=now, gen=gen)
            status["completionTime"] = c.format_time(now)
            plan.events.append(Event("Warning", c.BUDGET_NEVER_FITS, message))
            return plan
        if _set(status, c.ADMITTED, False, c.BUDGET_EXHAUSTED, message, now=now, gen=gen):
            plan.events.append(Event("Normal", c.BUDGET_EXHAUSTED, message))
        plan.requeue_after = WAIT_REQUEUE_SECONDS
        return plan

    plan.budget_writes.extend(writes)
    plan.events.extend(Event("Normal", "Reserved", w.message) for w in writes)
    if price.charges:
        spent = ", ".join(f"epsilon {ch.epsilon} on budget {ch.budget}" for ch in price.charges)
        message = f"reserved {spent} at delta {price.delta}"
    else:
        message = "privacy mode None: the federation charges no budget"
    _set(status, c.ADMITTED, True, c.RESERVED, message, now=now, gen=gen)
    _set(status, c.RUNNING, False, c.PENDING, "the federation's pods are being created",
         now=now, gen=gen)
    status["privacy"] = _privacy_status(price, ledger.RESERVED)
    status["federation"] = {"roundsCompleted": 0, "clientsConnected": 0}
    plan.events.append(Event("Normal", "Admitted", message))
    plan.create.extend(c for c in children if not _is_supernode(c))
    plan.requeue_after = RUNNING_REQUEUE_SECONDS
    return plan


def _is_supernode(child: Obj) -> bool:
    return child["kind"] == "Pod" and _component(child) == rf.SUPERNODE


def submitter_started(pods: Sequence[Obj]) -> bool:
    """Return whether the submitter's main container has started (its init container is done).

    SuperNodes are created only then: the SuperLink is up (the init container waited for it)
    and the submitter registers their public keys first thing, so a SuperNode does not dial a
    SuperLink that cannot resolve or does not know its key yet (each refusal is a container
    restart, and restarts back off).
    """
    for pod in pods:
        if _component(pod) != rf.SUBMITTER:
            continue
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            state = cs.get("state") or {}
            if "running" in state or "terminated" in state:
                return True
    return False


def _running(
    observed: FederatedObserved,
    price: FederatedPrice,
    children: list[Obj],
    status: Obj,
    plan: Plan,
    now: datetime,
) -> Plan:
    job = observed.job
    gen = _meta(job).get("generation")
    spec = job.get("spec") or {}
    plan.requeue_after = RUNNING_REQUEUE_SECONDS
    started = pods_may_have_started(observed)
    if started and not status.get("startTime"):
        status["startTime"] = c.format_time(now)
    submit = _submit_job(observed)
    names = rf.names(_meta(job)["name"])
    if submit is None:
        if started:
            message = f"the submitter Job {names['submit']} was deleted before the federation " \
                      "finished"
            return _end(observed, status, plan, now, success=False, reason=c.POD_FAILED,
                        message=message)
        # A crash between admission and creation.
        plan.create.extend(c for c in children if not _is_supernode(c))
        return plan

    # Create the SuperNodes once the submitter runs; recreate what is missing (a deleted
    # SuperNode pod, a Service); never the submitter Job.
    pods = {_meta(p)["name"]: p for p in observed.pods}
    supernodes_due = submitter_started(observed.pods) or any(
        _component(p) == rf.SUPERNODE for p in observed.pods)
    for child in children:
        name = child["metadata"]["name"]
        if child["kind"] == "Job" or (_is_supernode(child) and not supernodes_due):
            continue
        if child["kind"] == "Secret":
            plan.create.append(child)  # rendered only while the job does not record it
        elif child["kind"] == "Pod":
            if name not in pods:
                plan.create.append(child)
        elif observed.child(child["kind"], name) is None:
            plan.create.append(child)

    report = submitter_report(observed.pods)
    _record_federation(status, observed, report)
    done = job_condition(submit, "Complete")
    failed = job_condition(submit, "Failed")
    rounds = int(spec.get("rounds") or 0)
    if done is not None:
        if report is not None and report.status == "Completed" and \
                report.rounds_completed >= rounds:
            accuracy = (f", final accuracy {report.final_accuracy:.4f}"
                        if report.final_accuracy is not None else "")
            message = (f"all {rounds} rounds completed{accuracy}; every charge is committed")
            return _end(observed, status, plan, now, success=True, reason=c.SUCCEEDED,
                        message=message)
        detail = report.error if report is not None and report.error else "no report"
        message = f"the submitter exited 0 but the run did not complete: {detail}"
        return _end(observed, status, plan, now, success=False, reason=c.POD_FAILED,
                    message=message)
    if failed is not None:
        reason = c.DEADLINE_EXCEEDED if failed.get("reason") == "DeadlineExceeded" \
            else c.POD_FAILED
        detail = (report.error if report is not None and report.error
                  else failed.get("message")) or ""
        message = f"the federation failed ({failed.get('reason')}): {detail}".strip()
        return _end(observed, status, plan, now, success=False, reason=reason, message=message)

    superlink_running = any(
        _component(p) == rf.SUPERLINK and _phase(p) == "Running" for p in observed.pods)
    connected = int((status.get("federation") or {}).get("clientsConnected") or 0)
    n = len(spec.get("clients") or [])
    if superlink_running:
        _set(status, c.RUNNING, True, c.PODS_RUNNING,
             f"the SuperLink is running; {connected} of {n} SuperNodes are running; "
             f"{(status.get('federation') or {}).get('roundsCompleted') or 0} of {rounds} "
             "rounds completed", now=now, gen=gen)
    else:
        _set(status, c.RUNNING, False, c.PENDING,
             f"waiting for the SuperLink to start ({connected} of {n} SuperNodes running)",
             now=now, gen=gen)
    return plan


def _record_federation(status: Obj, observed: FederatedObserved,
                       report: fc.FederationReport | None) -> None:
    federation: Obj = dict(status.get("federation") or {})
    federation["clientsConnected"] = sum(
        1 for p in observed.pods if _component(p) == rf.SUPERNODE and _phase(p) == "Running")
    if report is not None:
        federation["roundsCompleted"] = report.rounds_completed
        if report.run_id is not None:
            federation["runId"] = str(report.run_id)
        rounds = []
        for r in report.rounds[-MAX_ROUNDS_IN_STATUS:]:
            entry: Obj = {"round": r.round, "clients": r.clients}
            loss = r.eval_loss if r.eval_loss is not None else r.train_loss
            if loss is not None:
                entry["loss"] = repr(float(loss))
            if r.accuracy is not None:
                entry["accuracy"] = repr(float(r.accuracy))
            if r.seconds is not None:
                entry["wallSeconds"] = repr(float(r.seconds))
            rounds.append(entry)
        if rounds:
            federation["rounds"] = rounds
    status["federation"] = federation


def _end(
    observed: FederatedObserved,
    status: Obj,
    plan: Plan,
    now: datetime,
    *,
    success: bool,
    reason: str,
    message: str,
) -> Plan:
    """Commit every charge first, then mark the job finished, then tear the federation down."""
    gen = _meta(observed.job).get("generation")
    _commit_all(plan, observed, now)
    _set(status, c.RUNNING, False, reason, message, now=now, gen=gen)
    _set(status, c.COMPLETE if success else c.FAILED, True, reason, message, now=now, gen=gen)
    status["completionTime"] = c.format_time(now)
    federation = status.setdefault("federation", {})
    federation["clientsConnected"] = 0
    _set_budget_state(status, ledger.COMMITTED)
    plan.events.append(Event("Normal" if success else "Warning", reason, message))
    _teardown(plan, observed)
    plan.requeue_after = None
    ttl_plan(plan, observed.job, status, now)
    return plan


# ---------------------------------------------------------------------------------------------
# decide_deletion
# ---------------------------------------------------------------------------------------------


def decide_deletion(observed: FederatedObserved, now: datetime) -> Plan:
    """Decide one pass of deleting a federation: settle every charge before the finalizer goes.

    As for PrivateTrainingJob: any evidence that a pod started commits every reservation; a
    release happens only after the submitter Job was deleted with ``Orphan`` propagation and
    every remaining pod, never bound to a node, was deleted with a resourceVersion
    precondition. The garbage collector removes the rest (owner references).

    Returns
    -------
    Plan
        ``done`` is True when the finalizer may be removed after the plan succeeds.

    """
    job = observed.job
    uid = _meta(job)["uid"]
    plan = Plan()
    reserved = [
        b for b in observed.budgets.values()
        if b is not None and (ledger.find_charge(b, uid) or {}).get("state") == ledger.RESERVED
    ]
    if not reserved:
        return plan
    if pods_may_have_started(observed):
        _commit_all(plan, observed, now)
        submit = _submit_job(observed)
        if submit is not None:
            plan.deletions.append(Deletion("Job", _meta(submit)["name"]))
        _teardown(plan, observed)
        plan.events.append(Event("Normal", c.DELETED, "Deleted while running: charges committed"))
        return plan
    submit = _submit_job(observed)
    if submit is not None:
        plan.deletions.append(Deletion("Job", _meta(submit)["name"], propagation="Orphan",
                                       uid=_meta(submit).get("uid")))
        plan.done = False
        plan.requeue_after = 1.0
        return plan
    if observed.pods:
        for pod in observed.pods:
            pm = _meta(pod)
            plan.deletions.append(Deletion("Pod", pm["name"], uid=pm.get("uid"),
                                           resource_version=pm.get("resourceVersion")))
        _release_held(plan, observed, now, late=True)
        return plan
    if was_admitted(job):
        _commit_all(plan, observed, now)  # children may have existed: when in doubt, commit
        return plan
    _release_held(plan, observed, now)
    return plan


# ---------------------------------------------------------------------------------------------
# price
# ---------------------------------------------------------------------------------------------


def price(job: Obj) -> FederatedPrice | InvalidSpec:
    """Compute what a FederatedJob costs, with the accounting library.

    Pure but possibly slow (calibrating a target epsilon): callers memoize it by job UID and
    generation.

    Parameters
    ----------
    job
        The FederatedJob object.

    Returns
    -------
    FederatedPrice or InvalidSpec
        The charges per budget and the parameters paid for, or the field that makes the spec
        unpayable.

    """
    from ppml_operator.privacy.decimals import format_cost
    from ppml_operator.reconcile.cost import job_charges
    from ppml_runtime import contract as rc

    try:
        charges = job_charges(job)
    except InvalidSpecError as err:
        return InvalidSpec(err.field, err.message)
    if not charges:
        return FederatedPrice()
    first = charges[0]
    accountant = str(first.accountant.value).upper()
    delta = str(first.delta)

    def paid(noise: Any, rate: Any, steps: int, epsilon: str) -> Paid:
        return Paid(
            noise_multiplier=str(noise),
            sample_rate=rc.exact_decimal_str(float(str(rate))),
            steps=int(steps),
            delta=delta,
            epsilon=epsilon,
            accountant=accountant,
        )

    budget_charges = tuple(sorted(
        (BudgetCharge(ch.budget, tuple(ch.event_dicts()), format_cost(ch.epsilon))
         for ch in charges),
        key=lambda b: b.budget,
    ))
    central = None
    clients: list[tuple[str, Paid]] = []
    if not first.clients:  # Central: one mechanism on one budget
        central = paid(first.noise_multiplier, first.sample_rate, int(first.steps or 0),
                       format_cost(first.epsilon))
    else:
        for ch in charges:
            eps = format_cost(ch.epsilon)
            clients.extend(
                (cc.name, paid(cc.noise_multiplier, cc.sample_rate, cc.steps, eps))
                for cc in ch.clients
            )
    return FederatedPrice(
        charges=budget_charges,
        paid=rf.FederationPaid(central=central, clients=tuple(clients)),
        delta=delta,
        accountant=accountant,
    )
