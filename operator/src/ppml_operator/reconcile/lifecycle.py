"""The one job lifecycle, for every kind: decide from what was observed to what to do, purely.

Kueue's job framework is the model (``pkg/controller/jobframework/interface.go``): one
reconciler drives every kind of job, and each kind answers a small set of questions through an
adapter (:class:`JobKind`) that registers itself (:func:`register`). This module imports no
kind; ``ppml_operator.reconcile.kinds`` lists the kinds the operator installs.

The lifecycle (``docs/ledger.md`` explains why each step is where it is):

1. **Validity and price.** The caller prices the job once per generation (the adapter's
   ``price``: N charges, one per budget drawn on; a PrivateTrainingJob has one) and passes the
   price in; an unpayable spec fails with ``InvalidSpec`` naming the field.
2. **Admission.** Suspended jobs wait; a missing budget waits; a job waits behind older jobs
   waiting on any of its budgets (arrival order); then it reserves on *every* budget, all or
   none (a budget that cannot pay makes the job release what it holds and wait, or fail when it
   could never fit). The reservations come first in the plan, then the Admitted condition, then
   the children, so no pod exists without a stored reservation.
3. **Tracking.** The runner (a batch Job: the trainer, or a federation's submitter) and the pods
   are read; missing children are recreated (never the runner: a deleted runner ends the job);
   the adapter reads progress and the final report and says when the job ended.
4. **The end.** Commit every charge, then the terminal condition, then the adapter's teardown,
   then ``ttlSecondsAfterFinished``.
5. **Deletion.** Release only when no pod can ever have started (the runner is deleted with
   ``Orphan`` propagation, then every pod with a resourceVersion precondition, and the release
   is written only after those deletions succeeded); commit on any evidence of a start, and
   when in doubt.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from ppml_operator.api import conditions as c
from ppml_operator.api.errors import InvalidSpecError
from ppml_operator.reconcile import ledger
from ppml_operator.reconcile.plan import BudgetWrite, Deletion, Event, Plan
from ppml_operator.render.common import RenderSettings, child_base, exec_namespace
from ppml_runtime import contract as rc

Obj = dict[str, Any]
T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# What the core works with
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Charge:
    """What a job charges one budget.

    Attributes
    ----------
    budget
        The PrivacyBudget's name (in the job's namespace).
    events
        Serialised privacy events covering every attempt charged.
    epsilon
        The charge's standalone epsilon at the job's delta.
    attempts
        How many attempts the events cover.

    """

    budget: str
    events: tuple[Obj, ...]
    epsilon: str
    attempts: int = 1


class Price(Protocol):
    """What every kind's price offers the core: its charges and its delta."""

    @property
    def charges(self) -> tuple[Charge, ...]:
        """One charge per budget drawn on, sorted by budget name (empty: free)."""

    @property
    def delta(self) -> str | None:
        """The job's delta (None when nothing is charged)."""


@dataclass(frozen=True)
class InvalidSpec:
    """The spec cannot be honoured; ``field`` names the offending field."""

    field: str
    message: str


@dataclass(frozen=True)
class Ending:
    """The adapter's verdict that the job ended: how, and the sentence saying so."""

    success: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """Everything ``decide`` looks at, read fresh from the API server.

    Attributes
    ----------
    job
        The job object.
    budgets
        Each budget the price charges, by name: the object, or None when it does not exist.
        Empty when this pass did not read them (see ``budget_read``).
    price
        The job's price, or :class:`InvalidSpec` when it cannot be computed.
    children
        The job's existing children (by the job-uid label), pods excepted; never Secrets (the
        operator may not read them).
    pods
        The job's pods (by the job-uid label).
    waiting_ahead
        Names of older jobs waiting on one of this job's budgets without a charge on it: this
        job waits behind them (admission in arrival order).
    settings
        Rendering settings.
    keep_committed
        How many committed charges a budget keeps unfolded (``PPML_LEDGER_KEEP``).
    progress
        The live gauges the caller scraped from the kind's :meth:`JobKind.progress_url`, as
        its :meth:`JobKind.parse_progress` read them (a trainer's
        :class:`~ppml_runtime.contract.ProgressSnapshot`, a federation's
        :class:`~ppml_runtime.federated.contract.FederationProgress`); None when none.
    extras
        Kind-specific observations the caller made with the adapter's ``extras`` (a
        federation's freshly generated key Secret).
    all_children
        Whether every child kind was listed (a routine pass over a job whose runner exists
        lists only the runner and the pods).
    budget_read
        Whether the budgets were read in this pass (only a pass that read them may end a job).
    exec_namespace
        Where the children live (the data owner's namespace for a job on another namespace's
        PrivateDataset; ``reconcile/dataset.py``); None: the job's.
    refused
        The PrivateDataset policy's :class:`~ppml_operator.reconcile.dataset.Refused`, when it
        refuses the job (only consulted before admission).
    lost
        For an admitted job, why it can no longer be resolved (its PrivateDataset was
        deleted): the job ends, every charge commits.
    namespaces
        Every namespace the children live in (the kind's :meth:`JobKind.namespaces`); empty:
        only ``exec_namespace``.

    """

    job: Obj
    budgets: Mapping[str, Obj | None]
    price: Any
    children: Sequence[Obj] = ()
    pods: Sequence[Obj] = ()
    waiting_ahead: Sequence[str] = ()
    settings: RenderSettings = field(default_factory=RenderSettings)
    keep_committed: int = ledger.DEFAULT_KEEP_COMMITTED
    progress: rc.ContractModel | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)
    all_children: bool = True
    budget_read: bool = True
    exec_namespace: str | None = None
    refused: Any = None
    lost: Any = None
    namespaces: tuple[str, ...] = ()

    @property
    def remote(self) -> bool:
        """Whether some children live in another namespace than the job (a data owner's)."""
        here = _meta(self.job)["namespace"]
        return self.exec_namespace not in (None, here) or any(
            ns != here for ns in self.namespaces)

    def child(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        """Return the observed child of that kind and name (in that namespace), if any."""
        for obj in self.children:
            meta = obj.get("metadata") or {}
            if obj.get("kind") == kind and meta.get("name") == name and (
                    namespace is None or meta.get("namespace", namespace) == namespace):
                return obj
        return None


class JobKind(ABC):
    """What differs between kinds of job: rendering, reading progress and reports, teardown.

    Each kind subclasses this once and calls :func:`register` at import. Every method is pure
    except :meth:`extras`, which the caller's *observe* step runs (never ``decide``).
    """

    kind: str
    """The Kubernetes kind (``PrivateTrainingJob``)."""

    plural: str
    """The resource's plural (``privatetrainingjobs``)."""

    noun: str
    """How messages name a job of this kind (``job``, ``federation``)."""

    runner: str
    """How messages name the runner, the batch Job doing the work (``trainer``)."""

    child_kinds: tuple[str, ...] = ("ServiceAccount", "ConfigMap", "NetworkPolicy", "Service",
                                    "Job")
    """The non-pod kinds of children observed by label (never Secret)."""

    creates_pods: bool = False
    """Whether the operator creates pods itself (checked, and recreated, every pass)."""

    @abstractmethod
    def runner_name(self, job_name: str) -> str:
        """Return the name of the job's runner (a batch/v1 Job)."""

    @abstractmethod
    def budget_names(self, spec: Obj) -> tuple[str, ...]:
        """Return the budgets a spec names (before pricing: for the arrival-order index)."""

    @abstractmethod
    def price(self, job: Obj) -> Price | InvalidSpec:
        """Price the job with the accounting library (pure; callers memoize by generation)."""

    def extras(self, job: Obj, now: datetime) -> Mapping[str, Any]:
        """Observe what only this kind needs (may be random, so never called by ``decide``)."""
        return {}

    @abstractmethod
    def render(self, observed: Observed, price: Any) -> list[Obj]:
        """Render every child (raise :class:`InvalidSpecError` for what only rendering finds)."""

    def held_back(self, child: Obj, observed: Observed) -> bool:
        """Return whether a rendered child is not to be created yet in this pass."""
        return False

    @abstractmethod
    def privacy_status(self, price: Any, state: str) -> Obj:
        """Return ``status.privacy`` for a price whose charges are in ``state``."""

    def on_admitted(self, status: Obj, price: Any) -> None:  # noqa: B027 (optional hook)
        """Add the kind's own fields to the status of a job being admitted."""

    @abstractmethod
    def track(self, observed: Observed, price: Any, runner: Obj, status: Obj, plan: Plan,
              now: datetime) -> Ending | None:
        """Read progress and reports of a running job into ``status``; say whether it ended."""

    def teardown(self, observed: Observed) -> list[Deletion]:
        """Return what to delete once the job is over (what keeps running or holds keys)."""
        return []

    def finish(self, plan: Plan, job: Obj) -> None:  # noqa: B027 (optional hook)
        """Complete a plan with what follows from its own content (a record of a creation)."""

    def progress_url(self, job: Obj, pods: Sequence[Obj]) -> str | None:
        """Return where the job's live gauges are served now, if this kind has any."""
        return None

    def parse_progress(self, metrics_text: str) -> rc.ContractModel:
        """Read the gauges served at :meth:`progress_url` (default: a trainer's).

        Raises ``ValueError`` (a pydantic ``ValidationError``) when they are out of range.
        """
        return rc.parse_progress(metrics_text)

    def namespaces(self, job: Obj) -> tuple[str, ...]:
        """Return every namespace the job's children live in, the runner's first.

        The caller observes pods and children by the job-uid label in each; a kind whose
        children span several namespaces (a federation across data owners) says so here.
        """
        return (exec_namespace(job),)

    def delivery_children(self, job: Obj) -> Sequence[tuple[str, str]]:
        """Return ``(kind, name)`` of children in the job's own namespace to observe by name.

        The model delivery Job, for a job whose other children may live elsewhere.
        """
        return ()


_KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    """Register a kind with the lifecycle (each kind's module calls this at import)."""
    _KINDS[kind.kind] = kind
    return kind


def kinds() -> tuple[JobKind, ...]:
    """Return every registered kind, in registration order."""
    return tuple(_KINDS.values())


def kind_of(name: str) -> JobKind:
    """Return the registered adapter of a kind (``PrivateTrainingJob``)."""
    return _KINDS[name]


# ---------------------------------------------------------------------------------------------
# Observations
# ---------------------------------------------------------------------------------------------


def _meta(obj: Obj) -> Obj:
    meta: Obj = obj["metadata"]
    return meta


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


def pod_started(pod: Obj) -> bool:
    """Return whether a pod may have touched data (bound to a node counts as started)."""
    phase = (pod.get("status") or {}).get("phase", "Pending")
    return bool((pod.get("spec") or {}).get("nodeName")) or phase != "Pending"


def job_counters(batch_job: Obj | None) -> tuple[int, int, int]:
    """Return a batch Job's ``(active, failed, succeeded)``, uncounted terminations included."""
    status = (batch_job or {}).get("status") or {}
    uncounted = status.get("uncountedTerminatedPods") or {}
    failed = int(status.get("failed") or 0) + len(uncounted.get("failed") or [])
    succeeded = int(status.get("succeeded") or 0) + len(uncounted.get("succeeded") or [])
    return int(status.get("active") or 0), failed, succeeded


def job_condition(batch_job: Obj | None, type_: str) -> Obj | None:
    """Return a batch Job's condition of that type when it is True."""
    for cond in ((batch_job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def newest_report(pods: Sequence[Obj], parse: Callable[[str], T],
                  include: Callable[[Obj], bool]) -> T | None:
    """Return the newest report in the termination messages of the included pods.

    A message that does not parse is skipped (a crashed process may leave any text there).
    """
    best: tuple[str, T] | None = None
    for pod in pods:
        if not include(pod):
            continue
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            message = term.get("message")
            if not message:
                continue
            try:
                report = parse(message)
            except (ValidationError, ValueError):
                continue
            finished = str(term.get("finishedAt") or "")
            if best is None or finished > best[0]:
                best = (finished, report)
    return best[1] if best else None


def runner_of(kind: JobKind, observed: Observed) -> Obj | None:
    """Return the job's runner as observed, if it exists."""
    return observed.child("Job", kind.runner_name(child_base(observed.job)))


def pods_may_have_started(kind: JobKind, observed: Observed) -> bool:
    """Judge, conservatively, whether any pod of the job may ever have started.

    Evidence: ``status.startTime`` (recorded as soon as a started pod is seen) or a counted
    attempt, a pod bound to a node or past Pending, the runner counting a terminated or ready
    pod, or the runner counting more active pods than carry the job's label (a pod relabelled
    so the operator would not see it is doubt, and doubt commits).
    """
    status = observed.job.get("status") or {}
    if status.get("startTime") or int(status.get("attempts") or 0) > 0:
        return True
    if any(pod_started(p) for p in observed.pods):
        return True
    runner = runner_of(kind, observed)
    active, failed, succeeded = job_counters(runner)
    ready = int(((runner or {}).get("status") or {}).get("ready") or 0)
    runner_uid = ((runner or {}).get("metadata") or {}).get("uid")

    def owned_by_runner(pod: Obj) -> bool:  # an orphaned pod (no owner left) counts too
        owners = {o.get("uid") for o in pod["metadata"].get("ownerReferences") or []}
        return not owners or runner_uid in owners

    own = sum(1 for pod in observed.pods if owned_by_runner(pod))
    return failed + succeeded + ready > 0 or active > own


def held_charges(observed: Observed) -> dict[str, str]:
    """Return the state of this job's charge on each observed budget that holds one."""
    uid = _meta(observed.job)["uid"]
    held: dict[str, str] = {}
    for name, budget in observed.budgets.items():
        charge = ledger.find_charge(budget, uid) if budget is not None else None
        if charge is not None:
            held[name] = str(charge.get("state"))
    return held


# ---------------------------------------------------------------------------------------------
# Status and ledger steps shared by every path
# ---------------------------------------------------------------------------------------------


def set_condition(status: Obj, type_: str, value: bool, reason: str, message: str, *,
                  now: datetime, gen: int | None) -> bool:
    """Set one condition of ``status``; return whether it changed."""
    conds: list[Obj] = status.setdefault("conditions", [])
    return c.set_condition(
        conds, {"type": type_, "status": value, "reason": reason, "message": message},
        now=now, generation=gen,
    )


def _finish(kind: JobKind, plan: Plan, job: Obj, status: Obj) -> Plan:
    kind.finish(plan, job)
    status["observedGeneration"] = _meta(job).get("generation")
    if status != (job.get("status") or {}):
        plan.status = status
    return plan


def failed_elsewhere(plan: Plan, runner: Obj, what: str, cause: str, detail: str) -> str:
    """Keep a runner's own words on the data owner's side; return the job's message.

    The runtime's error text may quote values, columns and counts of private records: it is
    posted as an event on the runner (in the execution namespace, where the data owner reads
    it, and the pods' logs hold the rest). The job's condition names only the cause and where
    its owner finds the details.
    """
    name = str(_meta(runner).get("name"))
    plan.owner_events.append(("Job", name, Event("Warning", "RunnerFailed",
                                                  f"{cause}: {detail}")))
    where = _meta(runner).get("namespace")
    return (f"{what} failed ({cause}); the details are in the events and logs of Job {name}"
            + (f" in namespace {where}" if where else "") + ", for its owner")


def charge_request(kind: JobKind, job: Obj, charge: Charge,
                   delta: str | None) -> ledger.ChargeRequest:
    """Return the ledger request for one of a job's charges."""
    meta = _meta(job)
    return ledger.ChargeRequest(
        job_uid=meta["uid"], job_kind=kind.kind, job_name=meta["name"],
        job_namespace=meta["namespace"], events=charge.events, epsilon=charge.epsilon,
        attempts=charge.attempts, delta=delta,
    )


def commit_all(plan: Plan, observed: Observed, now: datetime) -> None:
    """Commit the job's charge on every observed budget (a no-op where none is Reserved)."""
    uid = _meta(observed.job)["uid"]
    for name in sorted(observed.budgets):
        budget = observed.budgets[name]
        if budget is None:
            continue
        charge = ledger.find_charge(budget, uid)
        if charge is None or charge.get("state") != ledger.RESERVED:
            continue
        outcome = ledger.commit(budget, uid, now=c.format_time(now), keep=observed.keep_committed)
        if outcome.status is not None:
            plan.budget_writes.append(
                BudgetWrite(budget, outcome.status, "commit", uid, outcome.message))


def release_all(plan: Plan, observed: Observed, now: datetime, *, late: bool = False) -> None:
    """Release the job's Reserved charges (``late``: only after the plan's deletions)."""
    uid = _meta(observed.job)["uid"]
    for name in sorted(observed.budgets):
        budget = observed.budgets[name]
        if budget is None:
            continue
        outcome = ledger.release(budget, uid, now=c.format_time(now))
        if outcome.status is not None:
            write = BudgetWrite(budget, outcome.status, "release", uid, outcome.message)
            (plan.late_budget_writes if late else plan.budget_writes).append(write)


def _set_budget_state(status: Obj, state: str) -> None:
    for entry in (status.get("privacy") or {}).get("budgets") or []:
        entry["state"] = state


def _ttl(plan: Plan, job: Obj, status: Obj, now: datetime) -> None:
    ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
    finished_at = status.get("completionTime")
    if ttl is None or not finished_at:
        return
    due = datetime.fromisoformat(str(finished_at).replace("Z", "+00:00")) + timedelta(seconds=ttl)
    if now >= due:
        plan.delete_self = True
        plan.events.append(
            Event("Normal", "Expired", f"Deleted after ttlSecondsAfterFinished={ttl}"))


def _fail(status: Obj, plan: Plan, reason: str, message: str, *, now: datetime,
          gen: int | None, admitted_too: bool = True) -> None:
    """Refuse the job for good: Admitted False (unless it was), Failed True, an event."""
    if admitted_too:
        set_condition(status, c.ADMITTED, False, reason, message, now=now, gen=gen)
    set_condition(status, c.FAILED, True, reason, message, now=now, gen=gen)
    status["completionTime"] = c.format_time(now)
    plan.events.append(Event("Warning", reason, message))


def _wait(status: Obj, plan: Plan, reason: str, message: str, *, now: datetime,
          gen: int | None, level: str = "Normal") -> Plan:
    if set_condition(status, c.ADMITTED, False, reason, message, now=now, gen=gen):
        plan.events.append(Event(level, reason, message))
    return plan


# ---------------------------------------------------------------------------------------------
# decide
# ---------------------------------------------------------------------------------------------


def decide(kind: JobKind, observed: Observed, now: datetime) -> Plan:
    """Decide one reconcile pass of a live (not deleting) job of any kind.

    Parameters
    ----------
    kind
        The job's adapter.
    observed
        The job, its budgets, its price and its children, freshly read.
    now
        The clock.

    Returns
    -------
    Plan
        What to write, create, patch and delete, in order.

    """
    job = observed.job
    gen = _meta(job).get("generation")
    status = copy.deepcopy(job.get("status") or {})
    plan = Plan(child_namespace=observed.exec_namespace if observed.remote else None)
    if is_finished(job):
        # Settle charges left Reserved by a crash between the end and the commit; finish a
        # teardown a crash may have interrupted.
        commit_all(plan, observed, now)
        plan.deletions.extend(kind.teardown(observed))
        _ttl(plan, job, status, now)
        return _finish(kind, plan, job, status)
    if observed.lost is not None and was_admitted(job):
        # The data owner deleted the declaration the job ran on: nothing may run on, and the
        # charges commit (pods may have started: when in doubt, commit).
        runner = runner_of(kind, observed)
        why = observed.lost.message if observed.lost.reason == c.DATASET_DELETED else (
            f"the PrivateDataset named by {observed.lost.field} was deleted")
        end(kind, observed, status, plan, now, Ending(
            False, c.DATASET_DELETED,
            f"{why} while the {kind.noun} ran; its charges are committed"))
        if runner is not None:
            plan.deletions.append(Deletion("Job", _meta(runner)["name"]))
        return _finish(kind, plan, job, status)
    if observed.refused is not None and not was_admitted(job):
        # The data owner's policy refuses it (reconcile/dataset.py): wait, so that a grant or
        # an approval the owner adds later admits it. Checked before the price, which is
        # computed on the owner's data.
        refused = observed.refused
        _wait(status, plan, refused.reason, f"{refused.field}: {refused.message}", now=now,
              gen=gen, level="Warning")
        return _finish(kind, plan, job, status)
    if isinstance(observed.price, InvalidSpec):
        _fail(status, plan, c.INVALID_SPEC, f"{observed.price.field}: {observed.price.message}",
              now=now, gen=gen)
        return _finish(kind, plan, job, status)
    rendered: list[list[Obj]] = []

    def children() -> list[Obj]:
        if not rendered:
            rendered.append(kind.render(observed, observed.price))
        return rendered[0]

    try:
        if not was_admitted(job):
            _admission(kind, observed, children, status, plan, now)
        else:
            _running(kind, observed, children, status, plan, now)
    except InvalidSpecError as err:
        plan = Plan()
        status = copy.deepcopy(job.get("status") or {})
        _fail(status, plan, c.INVALID_SPEC, f"{err.field}: {err.message}", now=now, gen=gen,
              admitted_too=not was_admitted(job))
    return _finish(kind, plan, job, status)


def _admission(kind: JobKind, observed: Observed, children: Callable[[], list[Obj]],
               status: Obj, plan: Plan, now: datetime) -> None:
    job = observed.job
    meta = _meta(job)
    gen = meta.get("generation")
    price = observed.price
    if (job.get("spec") or {}).get("suspend"):
        set_condition(status, c.SUSPENDED, True, c.SUSPENDED_BY_USER,
                      f"spec.suspend is true: the {kind.noun} waits; set it to false to admit "
                      "it", now=now, gen=gen)
        set_condition(status, c.ADMITTED, False, c.SUSPENDED_BY_USER,
                      f"spec.suspend is true: the {kind.noun} is not admitted while suspended",
                      now=now, gen=gen)
        return
    if c.get_condition(status.get("conditions"), c.SUSPENDED) is not None:
        set_condition(status, c.SUSPENDED, False, c.RESUMED, "spec.suspend is false", now=now,
                      gen=gen)
    initial = children()  # rendering before any charge: what only rendering refuses is free

    names = [ch.budget for ch in price.charges]
    missing = [name for name in names if observed.budgets.get(name) is None]
    # A budget being deleted takes no new charge (the chart's ledger guard refuses it too).
    leaving = [name for name in names if name not in missing
               and (observed.budgets[name] or {}).get("metadata", {}).get("deletionTimestamp")]
    if missing or leaving:
        why = [f"PrivacyBudget {', '.join(missing)} charged by this {kind.noun} does not exist "
               f"in namespace {meta['namespace']}; create it or fix the budgetRef"] if missing \
            else []
        why += [f"PrivacyBudget {', '.join(leaving)} is being deleted and takes no new "
                "charge"] if leaving else []
        _wait(status, plan, c.BUDGET_NOT_FOUND, "; ".join(why), now=now, gen=gen,
              level="Warning")
        return
    held = held_charges(observed)
    committed = sorted(name for name, state in held.items() if state == ledger.COMMITTED)
    if committed:
        # Spent already but never marked admitted: pods may have run. Never run it again.
        message = f"budget {committed[0]} already holds a committed charge for this {kind.noun}"
        set_condition(status, c.FAILED, True, c.BUDGET_EXHAUSTED, message, now=now, gen=gen)
        status["completionTime"] = c.format_time(now)
        return
    all_reserved = all(held.get(name) == ledger.RESERVED for name in names)
    if not all_reserved and observed.waiting_ahead:
        ahead = ", ".join(observed.waiting_ahead[:3])
        message = (f"waiting behind older jobs on budget {', '.join(names)} ({ahead}): jobs are "
                   "admitted in arrival order")
        _wait(status, plan, c.BUDGET_EXHAUSTED, message, now=now, gen=gen)
        return

    writes: list[BudgetWrite] = []
    blocked: list[ledger.Outcome] = []
    for charge in price.charges:
        budget = observed.budgets[charge.budget]
        assert budget is not None
        outcome = ledger.reserve(budget, charge_request(kind, job, charge, price.delta),
                                 now=c.format_time(now))
        if outcome.result in (ledger.Result.EXHAUSTED, ledger.Result.NEVER_FITS):
            blocked.append(outcome)
        elif outcome.status is not None:
            writes.append(BudgetWrite(budget, outcome.status, "reserve", meta["uid"],
                                      outcome.message))
    if blocked:
        # All or none: give back what an earlier pass reserved (no pod was ever created).
        release_all(plan, observed, now)
        never = [o for o in blocked if o.result == ledger.Result.NEVER_FITS]
        message = "; ".join(o.message for o in (never or blocked))
        if never:
            _fail(status, plan, c.BUDGET_NEVER_FITS, message, now=now, gen=gen)
            return
        _wait(status, plan, c.BUDGET_EXHAUSTED, message, now=now, gen=gen)
        return

    # The reservations are stored (or will be, first in this plan): admit, create children.
    plan.budget_writes.extend(writes)
    # One event says it all (each event is a write to the API server; a burst of jobs pays
    # for every one): the Admitted event names what was reserved on which budget.
    if price.charges:
        spent = ", ".join(f"epsilon {ch.epsilon} on budget {ch.budget}" for ch in price.charges)
        message = f"reserved {spent} at delta {price.delta}"
    else:
        message = f"privacy mode None: the {kind.noun} charges no budget"
    set_condition(status, c.ADMITTED, True, c.RESERVED, message, now=now, gen=gen)
    set_condition(status, c.RUNNING, False, c.PENDING,
                  f"the {kind.noun}'s pods are being created", now=now, gen=gen)
    status["privacy"] = kind.privacy_status(price, ledger.RESERVED)
    kind.on_admitted(status, price)
    plan.events.append(Event("Normal", "Admitted", message))
    plan.create.extend(ch for ch in initial if not kind.held_back(ch, observed))


def _running(kind: JobKind, observed: Observed, children: Callable[[], list[Obj]],
             status: Obj, plan: Plan, now: datetime) -> None:
    job = observed.job
    started = pods_may_have_started(kind, observed)
    if started and not status.get("startTime"):
        status["startTime"] = c.format_time(now)
    running_cond = c.get_condition(status.get("conditions"), c.RUNNING)
    seen_running = running_cond is not None and running_cond.get("reason") != c.PENDING
    runner = runner_of(kind, observed)
    if runner is None:
        if seen_running or started:
            # The runner existed and is gone (deleted by someone): never run it again.
            message = (f"the {kind.runner} Job {kind.runner_name(child_base(job))} was deleted "
                       f"before the {kind.noun} finished")
            end(kind, observed, status, plan, now, Ending(False, c.POD_FAILED, message))
            return
        # Children not (all) created yet: a crash between admission and creation.
        plan.create.extend(ch for ch in children() if not kind.held_back(ch, observed))
        return
    if observed.all_children or kind.creates_pods:
        plan.create.extend(_missing(kind, observed, children()))
    ending = kind.track(observed, observed.price, runner, status, plan, now)
    if ending is not None:
        end(kind, observed, status, plan, now, ending)


def _missing(kind: JobKind, observed: Observed, children: list[Obj]) -> list[Obj]:
    """Return the rendered children to recreate: never the runner, nothing held back."""
    default_ns = observed.exec_namespace or _meta(observed.job)["namespace"]
    pods = {(_meta(p).get("namespace", default_ns), _meta(p)["name"]) for p in observed.pods}
    out: list[Obj] = []
    for child in children:
        name = child["metadata"]["name"]
        namespace = child["metadata"].get("namespace", default_ns)
        if child["kind"] == "Job" or kind.held_back(child, observed):
            continue
        if child["kind"] == "Secret":
            out.append(child)  # write-only: rendered only while the job does not record it
        elif child["kind"] == "Pod":
            if (namespace, name) not in pods:
                out.append(child)
        elif observed.all_children and observed.child(child["kind"], name, namespace) is None:
            out.append(child)
    return out


def end(kind: JobKind, observed: Observed, status: Obj, plan: Plan, now: datetime,
        ending: Ending) -> None:
    """Commit every charge first, then mark the job finished, then tear it down."""
    if not observed.budget_read:
        raise ValueError("a job cannot be finished from a pass that did not read its budgets")
    gen = _meta(observed.job).get("generation")
    commit_all(plan, observed, now)
    set_condition(status, c.RUNNING, False, ending.reason, ending.message, now=now, gen=gen)
    set_condition(status, c.COMPLETE if ending.success else c.FAILED, True, ending.reason,
                  ending.message, now=now, gen=gen)
    status["completionTime"] = c.format_time(now)
    _set_budget_state(status, ledger.COMMITTED)
    plan.events.append(
        Event("Normal" if ending.success else "Warning", ending.reason, ending.message))
    plan.deletions.extend(kind.teardown(observed))
    _ttl(plan, observed.job, status, now)


# ---------------------------------------------------------------------------------------------
# decide_deletion
# ---------------------------------------------------------------------------------------------


def decide_deletion(kind: JobKind, observed: Observed, now: datetime) -> Plan:
    """Decide one pass of deleting a job: settle every charge before the finalizer goes.

    A reservation is released only when no pod can have started: the runner is first deleted
    with ``Orphan`` propagation (so it creates no more pods and its pods stay visible), then
    each remaining pod, never bound to a node, is deleted with a resourceVersion precondition
    (a pod bound meanwhile fails it); the release is written only after all of those deletions
    succeeded. Any evidence of a started pod commits instead, and so does doubt (no runner, no
    pods, but the job was admitted).

    Returns
    -------
    Plan
        ``done`` is True when the finalizer may be removed after the plan succeeds.

    """
    plan = _settle_deletion(kind, observed, now)
    plan.child_namespace = observed.exec_namespace if observed.remote else None
    if observed.remote and plan.done:
        # Owner references never cross namespaces: the finalizer stays until every child in
        # another namespace than the job's (the data owners', the operator's) is gone,
        # deleted here by the job-uid label, in whichever namespace it was found.
        here = _meta(observed.job)["namespace"]
        default_ns = observed.exec_namespace or here
        planned = {(d.kind, d.namespace or default_ns, d.name) for d in plan.deletions}
        leftovers = [(str(obj.get("kind") or "Pod"), _meta(obj).get("namespace", default_ns),
                      _meta(obj)) for obj in [*observed.children, *observed.pods]
                     if _meta(obj).get("namespace", default_ns) != here]
        for child_kind, namespace, meta in leftovers:
            if (child_kind, namespace, meta["name"]) not in planned and \
                    not meta.get("deletionTimestamp"):
                plan.deletions.append(Deletion(child_kind, meta["name"], namespace=namespace))
        plan.done = not leftovers
    return plan


def _settle_deletion(kind: JobKind, observed: Observed, now: datetime) -> Plan:
    """Settle a deleted job's charges (see :func:`decide_deletion`)."""
    job = observed.job
    plan = Plan()
    if ledger.RESERVED not in held_charges(observed).values():
        return plan
    runner = runner_of(kind, observed)
    if pods_may_have_started(kind, observed):
        commit_all(plan, observed, now)
        if runner is not None:  # stop the pods now rather than after the garbage collector
            plan.deletions.append(Deletion("Job", _meta(runner)["name"]))
        plan.deletions.extend(kind.teardown(observed))
        plan.events.append(Event("Normal", c.DELETED, "Deleted while running: charge committed"))
        return plan
    if runner is not None:
        plan.deletions.append(Deletion("Job", _meta(runner)["name"], propagation="Orphan",
                                       uid=_meta(runner).get("uid")))
        plan.done = False
        return plan
    if observed.pods:
        for pod in observed.pods:
            pm = _meta(pod)
            plan.deletions.append(Deletion("Pod", pm["name"], uid=pm.get("uid"),
                                           resource_version=pm.get("resourceVersion")))
        release_all(plan, observed, now, late=True)
        return plan
    if was_admitted(job):
        commit_all(plan, observed, now)  # children may have existed: when in doubt, commit
        return plan
    release_all(plan, observed, now)
    return plan
