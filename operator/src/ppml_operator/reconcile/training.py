"""PrivateTrainingJob's adapter to the one job lifecycle (:mod:`ppml_operator.reconcile.lifecycle`).

What is particular to centralized DP-SGD: the price (one charge on ``spec.budgetRef``, covering
every attempt the retry policy allows), the children (:mod:`ppml_operator.render.trainer`; the
runner is the ``{job}-trainer`` batch Job), and how a running job is read: the trainer Job's
counters and conditions, the rank-0 termination report, the live gauges, and ``spec.suspend``
passed on to the trainer Job (the reservation is kept while suspended).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from ppml_operator.api import conditions as c
from ppml_operator.api.v1alpha1 import PrivateTrainingJob
from ppml_operator.reconcile import delivery as model_delivery
from ppml_operator.reconcile import ledger, lifecycle
from ppml_operator.reconcile.lifecycle import (
    Charge,
    Ending,
    InvalidSpec,
    Observed,
    failed_elsewhere,
    job_condition,
    job_counters,
    newest_report,
    set_condition,
)
from ppml_operator.reconcile.plan import Deletion, Event, Plan
from ppml_operator.render import delivery
from ppml_operator.render.trainer import COMPONENT, Paid, names, render_children
from ppml_runtime import contract as rc

Obj = dict[str, Any]

KIND = "PrivateTrainingJob"


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
    budget
        The budget charged (``spec.budgetRef.name``).

    """

    events: tuple[Obj, ...]
    epsilon: str
    delta: str
    noise_multiplier: str
    sample_rate: str
    steps: int
    accountant: str = "RDP"
    attempts: int = 1
    budget: str = ""

    @property
    def charges(self) -> tuple[Charge, ...]:
        """The one charge, on ``spec.budgetRef``."""
        return (Charge(self.budget, self.events, self.epsilon, self.attempts),)

    @property
    def paid(self) -> Paid:
        """What the runtime is configured with: exactly what was paid for."""
        return Paid(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate,
                    steps=self.steps, delta=self.delta, epsilon=self.epsilon,
                    accountant=self.accountant)


class TrainingKind(lifecycle.JobKind):
    """The PrivateTrainingJob adapter."""

    kind = KIND
    plural = "privatetrainingjobs"
    noun = "job"
    runner = "trainer"
    child_kinds = ("ServiceAccount", "ConfigMap", "NetworkPolicy", "Service",
                   "PersistentVolumeClaim", "Job")

    def runner_name(self, job_name: str) -> str:
        """Return the trainer Job's name (``job_name`` is the child base: ``child_base``)."""
        return names(job_name)["job"]

    def budget_names(self, spec: Obj) -> tuple[str, ...]:  # noqa: D102
        name = str((spec.get("budgetRef") or {}).get("name", ""))
        return (name,) if name else ()

    def price(self, job: Obj) -> Price | InvalidSpec:  # noqa: D102
        return price(job)

    def render(self, observed: Observed, price: Price) -> list[Obj]:  # noqa: D102
        ptj = PrivateTrainingJob.model_validate(observed.job)
        return render_children(observed.job, ptj, price.paid, observed.settings)

    def privacy_status(self, price: Price, state: str) -> Obj:  # noqa: D102
        return {
            "epsilon": price.epsilon,
            "delta": price.delta,
            "noiseMultiplier": price.noise_multiplier,
            "sampleRate": price.sample_rate,
            "steps": price.steps,
            "accountant": price.accountant,
            "budgets": [{"name": price.budget, "epsilon": price.epsilon, "state": state}],
        }

    def delivery_children(self, job: Obj) -> Sequence[tuple[str, str]]:  # noqa: D102
        return [("Job", delivery.names(job)["delivery"])] if _wants_model(job) else []

    def teardown(self, observed: Observed) -> list[Deletion]:
        """Delete the model's export pod, its policy and the operator-owned output claim."""
        return model_delivery.teardown(observed.job)

    def progress_url(self, job: Obj, pods: Sequence[Obj]) -> str | None:
        """Return the rank-0 trainer's metrics endpoint while it runs."""
        for pod in _trainer_pods(pods):
            annotations = pod["metadata"].get("annotations") or {}
            ip = (pod.get("status") or {}).get("podIP")
            if (pod.get("status") or {}).get("phase") == "Running" and ip and annotations.get(
                    "batch.kubernetes.io/job-completion-index", "0") == "0":
                return f"http://{ip}:{rc.METRICS_PORT}/metrics"
        return None

    def track(self, observed: Observed, price: Price, runner: Obj, status: Obj, plan: Plan,
              now: datetime) -> Ending | None:
        """Read the trainer Job, the report and the gauges; pass ``spec.suspend`` on."""
        job = observed.job
        gen = job["metadata"].get("generation")
        spec = job.get("spec") or {}
        active, failed, succeeded = job_counters(runner)
        # The lifecycle recorded startTime in this very status when any evidence of a start
        # was seen (reconcile/lifecycle.py, _running): the same verdict, not judged twice.
        started = bool(status.get("startTime"))
        status["attempts"] = max(int(status.get("attempts") or 0),
                                 failed + succeeded + active if started else 0)
        status["failed"] = failed
        report = _report(observed.pods)
        if report is not None:
            _record_report(status, report, price, plan, now, gen, spec)
            status["progress"] = {**(status.get("progress") or {}),
                                  "step": report.steps_completed, "totalSteps": price.steps}
        runner_name = runner["metadata"]["name"]
        if job_condition(runner, "Complete") is not None:
            ending = _deliver(observed, report, status, plan, now, gen)
            if ending is not None:
                _owner_report(plan, runner_name, report)
            return ending
        failed_cond = job_condition(runner, "Failed")
        if failed_cond is not None:
            reason = {
                "DeadlineExceeded": c.DEADLINE_EXCEEDED,
                "BackoffLimitExceeded": c.BACKOFF_LIMIT_EXCEEDED if spec.get("backoffLimit")
                else c.POD_FAILED,
            }.get(str(failed_cond.get("reason")), c.POD_FAILED)
            detail = (report.error if report and report.error
                      else failed_cond.get("message")) or ""
            _owner_report(plan, runner_name, report)
            return Ending(False, reason, failed_elsewhere(
                plan, runner, "the trainer", str(failed_cond.get("reason")), detail))
        # Suspend: the trainer Job's own suspend stops its pods; the reservation is kept. A
        # trainer that started and was suspended is never resumed: its next pod would train
        # from step 0 again, an attempt nobody paid for (and suspend-resume could repeat it
        # without limit). The job stays suspended until it is deleted (the charge commits).
        want_suspend = bool(spec.get("suspend"))
        runner_suspended = bool((runner.get("spec") or {}).get("suspend"))
        if runner_suspended and not want_suspend and started:
            message = ("spec.suspend was set after the trainer started: resuming would train "
                       "from step 0 again, which was not paid for; delete the job (its charge "
                       "is committed) and submit a new one")
            if set_condition(status, c.SUSPENDED, True, c.RESUME_NOT_PAID, message, now=now,
                             gen=gen):
                plan.events.append(Event("Warning", c.RESUME_NOT_PAID, message))
            set_condition(status, c.RUNNING, False, c.RESUME_NOT_PAID, message, now=now,
                          gen=gen)
            return None
        if runner_suspended != want_suspend:
            plan.patches.append(("Job", runner["metadata"]["name"],
                                 {"spec": {"suspend": want_suspend}}))
        if want_suspend:
            set_condition(status, c.SUSPENDED, True, c.SUSPENDED_BY_USER,
                          "spec.suspend is true: the pods are stopped, the reservation kept",
                          now=now, gen=gen)
        elif c.get_condition(status.get("conditions"), c.SUSPENDED) is not None:
            set_condition(status, c.SUSPENDED, False, c.RESUMED, "spec.suspend is false",
                          now=now, gen=gen)
        running = [p for p in _trainer_pods(observed.pods)
                   if (p.get("status") or {}).get("phase") == "Running"]
        if isinstance(observed.progress, rc.ProgressSnapshot):
            status["progress"] = progress_status(observed.progress, price.steps)
        if running:
            set_condition(status, c.RUNNING, True, c.PODS_RUNNING,
                          f"{len(running)} of {spec.get('runtime', {}).get('workers', 1)} "
                          "trainer pods are running", now=now, gen=gen)
        else:
            set_condition(status, c.RUNNING, False, c.PENDING,
                          "waiting for the trainer pods to start", now=now, gen=gen)
        return None


TRAINING = lifecycle.register(TrainingKind())
"""The registered PrivateTrainingJob adapter."""


def decide(observed: Observed, now: datetime) -> Plan:
    """Decide one pass of a live PrivateTrainingJob (:func:`lifecycle.decide`)."""
    return lifecycle.decide(TRAINING, observed, now)


def decide_deletion(observed: Observed, now: datetime) -> Plan:
    """Decide one pass of deleting a PrivateTrainingJob (:func:`lifecycle.decide_deletion`)."""
    return lifecycle.decide_deletion(TRAINING, observed, now)


def _trainer_pods(pods: Sequence[Obj]) -> list[Obj]:
    """Return the trainer's pods among the job's (not the model's export pod)."""
    return [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(
        "app.kubernetes.io/component", COMPONENT) == COMPONENT]


_wants_model = model_delivery.wants_model


def _deliver(observed: Observed, report: rc.TrainingReport | None, status: Obj, plan: Plan,
             now: datetime, gen: int | None) -> Ending | None:
    """Take the completed trainer's model to the job's claim (``reconcile/delivery.py``)."""
    if not _wants_model(observed.job):
        return Ending(True, c.SUCCEEDED, "every worker finished; the charge is committed")
    return model_delivery.deliver(observed, report.model_sha256 if report else None, status,
                                  plan, now, gen, runner="trainer", done="every worker finished",
                                  committed="the charge is committed")


def _owner_report(plan: Plan, runner_name: str, report: rc.TrainingReport | None) -> None:
    """Tell the data owner the exact test metrics (an event on the trainer Job, their side).

    They are computed on private records without noise, so never copied to the job's status
    or events: only the DP release (``spec.output.testMetrics``) is.
    """
    if report is None or (report.test_accuracy is None and report.test_loss is None):
        return
    plan.owner_events.append(("Job", runner_name, Event(
        "Normal", "ExactTestMetrics",
        f"test accuracy {report.test_accuracy}, test loss {report.test_loss} on "
        f"{report.test_records} records (exact: not differentially private, for the data "
        "owner only)")))


def _report(pods: Sequence[Obj]) -> rc.TrainingReport | None:
    """Return the newest rank-0 termination report among the trainer pods, if any parses."""
    return newest_report(_trainer_pods(pods), rc.parse_report, lambda pod: (
        (pod.get("metadata") or {}).get("annotations") or {}).get(
            "batch.kubernetes.io/job-completion-index", "0") == "0")


def progress_status(progress: rc.ProgressSnapshot, steps: int) -> Obj:
    """Return ``status.progress`` from the runtime's live gauges.

    The per-step batch loss is never copied into status: it is computed on private records
    without noise, so it is not a differentially private release (it stays on the trainer's
    metrics port, which only the operator may reach; ``render/trainer.py``'s NetworkPolicy).
    """
    out: Obj = {"step": progress.step, "totalSteps": progress.total_steps or steps,
                "epoch": int(progress.epoch)}
    if progress.epsilon is not None:
        out["epsilonSoFar"] = f"{progress.epsilon:.6g}"
    return out


def _record_report(
    status: Obj, report: rc.TrainingReport, price: Price, plan: Plan, now: datetime,
    gen: int | None, job_spec: Obj | None = None,
) -> None:
    metrics: Obj = {}
    # Only the DP release of the test metrics (spec.output.testMetrics, charged with the job);
    # the exact figures go to the data owner (_owner_report).
    if report.released_test_accuracy is not None:
        metrics["testAccuracy"] = repr(report.released_test_accuracy)
    if report.released_test_loss is not None:
        metrics["testLoss"] = repr(report.released_test_loss)
    release = ((job_spec or {}).get("output") or {}).get("testMetrics") or {}
    if metrics and release.get("noiseMultiplier"):
        metrics["releaseNoiseMultiplier"] = str(release["noiseMultiplier"])
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
    try:
        exceeds = not Decimal(measured).is_finite() or Decimal(measured) > Decimal(price.epsilon)
    except InvalidOperation:  # not a number at all: a report to distrust, never a crash
        exceeds = True
    if exceeds:
        message = (
            f"the runtime measured epsilon {measured}, more than the {price.epsilon} charged"
        )
        if set_condition(status, c.PRIVACY_VERIFIED, False, c.MEASURED_EXCEEDS_CHARGE, message,
                         now=now, gen=gen):
            plan.events.append(Event("Warning", c.MEASURED_EXCEEDS_CHARGE, message))
    else:
        set_condition(status, c.PRIVACY_VERIFIED, True, c.MEASURED_WITHIN_CHARGE,
                      f"the runtime measured epsilon {measured}, within the {price.epsilon} "
                      "charged", now=now, gen=gen)


def attempts_charged(job: Obj) -> int:
    """Return how many attempts a job's charge covers (the retry policy, ``docs/ledger.md``).

    Every retry may train from step 0 again, so the charge covers ``backoffLimit + 1`` attempts
    up front, with or without ``spec.checkpoint``: the checkpoint journal lives on a claim the
    submitter can write, and a missing journal means a fresh start, so a checkpoint is no
    evidence that a retry resumes (issue 13; the journal would have to live where only the
    operator writes before a checkpoint could earn a discount).
    """
    spec = job.get("spec") or {}
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
        budget=str(charge.budget),
    )
