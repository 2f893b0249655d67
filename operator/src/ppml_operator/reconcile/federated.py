"""FederatedJob's adapter to the one job lifecycle (:mod:`ppml_operator.reconcile.lifecycle`).

What is particular to a Flower federation: the price (Central DP charges ``spec.budgetRef``
with the client-level event; local DP charges each silo's budget, or the job's, with the silos'
DP-SGD events, all or none; privacy mode None charges nothing), the children
(:mod:`ppml_operator.render.federated`: the SuperLink and the submitter first, the SuperNodes
once the submitter has started, so they never dial a SuperLink that does not know their keys
yet), the runner (the ``{job}-submit`` batch Job), the live gauges the ServerApp serves in the
SuperLink's pod (rounds completed and their durations, while the run goes on), the submitter's
report (which wins once the run ended), and the teardown (SuperLink and SuperNode pods, the key
Secret).

Key material lives in one Secret that the operator creates and never reads (no get, list or
watch on Secrets): the caller generates it through :meth:`FederatedKind.extras` while the job
does not record it (the ``ppml.dev/keys-secret`` annotation, random so never in ``decide``);
the plan creates it before anything that mounts it and then patches the job to record it; a
create that finds it already there (an earlier pass that stopped before the patch) is as good
as done.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ppml_operator.api import conditions as c
from ppml_operator.api.errors import InvalidSpecError
from ppml_operator.api.v1alpha1 import FederatedJob
from ppml_operator.reconcile import delivery as model_delivery
from ppml_operator.reconcile import lifecycle
from ppml_operator.reconcile.lifecycle import (
    Charge,
    Ending,
    InvalidSpec,
    Observed,
    failed_elsewhere,
    is_finished,
    job_condition,
    newest_report,
    set_condition,
)
from ppml_operator.reconcile.plan import Deletion, Event, Plan
from ppml_operator.render import delivery
from ppml_operator.render import federated as rf
from ppml_operator.render.common import child_base, exec_namespace
from ppml_operator.render.trainer import Paid
from ppml_runtime import contract as rc
from ppml_runtime.federated import contract as fc

Obj = dict[str, Any]

KIND = "FederatedJob"

MAX_ROUNDS_IN_STATUS = 100
"""How many rounds' metrics ``status.federation.rounds`` keeps (the newest)."""

KEY_SECRETS = "keySecrets"
"""The key of :meth:`FederatedKind.extras` holding freshly generated key Secrets."""

BudgetCharge = Charge
"""What the federation charges one budget (the lifecycle's :class:`Charge`)."""


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

    charges: tuple[Charge, ...] = ()
    paid: rf.FederationPaid = field(default_factory=rf.FederationPaid)
    delta: str | None = None
    accountant: str = "RDP"


def _component(obj: Obj) -> str:
    return str(((obj.get("metadata") or {}).get("labels") or {}).get(
        "app.kubernetes.io/component", ""))


def _phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase", "Pending"))


def submitter_report(pods: Sequence[Obj]) -> fc.FederationReport | None:
    """Return the newest FederationReport among the submitter pods' termination messages."""
    return newest_report(pods, fc.parse_federation_report,
                         lambda pod: _component(pod) == rf.SUBMITTER)


def new_key_secrets(job: Obj, now: datetime) -> list[Obj]:
    """Generate the job's key Secrets unless the job records them as created (or is over)."""
    if is_finished(job) or job["metadata"].get("deletionTimestamp"):
        return []
    if rf.key_secret_recorded(job):
        return []
    try:
        fj = FederatedJob.model_validate({k: v for k, v in job.items() if k != "status"})
    except ValidationError:
        return []  # the price reports the invalid spec
    return rf.generate_key_secrets(job, fj, now)


class FederatedKind(lifecycle.JobKind):
    """The FederatedJob adapter."""

    kind = KIND
    plural = "federatedjobs"
    noun = "federation"
    runner = "submitter"
    creates_pods = True

    child_kinds = ("ServiceAccount", "ConfigMap", "NetworkPolicy", "Service",
                   "PersistentVolumeClaim", "Job")

    def runner_name(self, job_name: str) -> str:  # noqa: D102
        return rf.names(job_name)["submit"]

    def namespaces(self, job: Obj) -> tuple[str, ...]:
        """Return the server side's namespace and every data owner's the silos run in."""
        return rf.namespaces(job)

    def delivery_children(self, job: Obj) -> Sequence[tuple[str, str]]:  # noqa: D102
        if not model_delivery.wants_model(job):
            return []
        return [("Job", delivery.names(job)["delivery"])]

    def budget_names(self, spec: Obj) -> tuple[str, ...]:  # noqa: D102
        refs = [spec.get("budgetRef") or {}]
        refs.extend(client.get("budgetRef") or {} for client in spec.get("clients") or [])
        return tuple(sorted({str(r["name"]) for r in refs if r.get("name")}))

    def price(self, job: Obj) -> FederatedPrice | InvalidSpec:  # noqa: D102
        return price(job)

    def extras(self, job: Obj, now: datetime) -> Mapping[str, Any]:
        """Generate the key Secrets while the job does not record them (random: not ``decide``)."""
        secrets = new_key_secrets(job, now)
        return {KEY_SECRETS: secrets} if secrets else {}

    def render(self, observed: Observed, price: FederatedPrice) -> list[Obj]:  # noqa: D102
        fj = FederatedJob.model_validate(
            {k: v for k, v in observed.job.items() if k != "status"})
        return rf.render_children(observed.job, fj, price.paid, observed.settings,
                                  observed.extras.get(KEY_SECRETS) or ())

    def held_back(self, child: Obj, observed: Observed) -> bool:
        """Hold the SuperNodes back until the submitter has started (see the module doc).

        No pod at all is (re)created while the federation is suspended, nor ever again once it
        was suspended after it started (see :func:`_suspend`).
        """
        if child["kind"] == "Pod" and _suspended(observed.job):
            return True
        if not (child["kind"] == "Pod" and _component(child) == rf.SUPERNODE):
            return False
        return not (submitter_started(observed.pods) or any(
            _component(p) == rf.SUPERNODE for p in observed.pods))

    def privacy_status(self, price: FederatedPrice, state: str) -> Obj:  # noqa: D102
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

    def progress_url(self, job: Obj, pods: Sequence[Obj]) -> str | None:
        """Return the ServerApp's gauges in the running SuperLink pod (the server side's).

        Only the pod of the SuperLink's name in the server side's namespace (the operator's,
        for a federation across data owners): a pod an owner labels like it in their own
        namespace is never scraped.
        """
        name, namespace = rf.names(child_base(job))["superlink"], exec_namespace(job)
        for pod in pods:
            meta = pod.get("metadata") or {}
            ip = (pod.get("status") or {}).get("podIP")
            if meta.get("name") == name and meta.get("namespace", namespace) == namespace \
                    and _component(pod) == rf.SUPERLINK and _phase(pod) == "Running" and ip:
                return f"http://{ip}:{rc.FEDERATION_METRICS_PORT}/metrics"
        return None

    def parse_progress(self, metrics_text: str) -> fc.FederationProgress:
        """Read the ServerApp's gauges (rounds completed, each round's seconds)."""
        return fc.parse_federation_progress(metrics_text)

    def on_admitted(self, status: Obj, price: FederatedPrice) -> None:  # noqa: D102
        status["federation"] = {"roundsCompleted": 0, "clientsConnected": 0}

    def track(self, observed: Observed, price: FederatedPrice, runner: Obj, status: Obj,
              plan: Plan, now: datetime) -> Ending | None:
        """Read the submitter's report and the pods; say when the run ended."""
        spec = observed.job.get("spec") or {}
        gen = observed.job["metadata"].get("generation")
        report = submitter_report(observed.pods)
        _record_federation(status, observed, report)
        rounds = int(spec.get("rounds") or 0)
        ending = _ending(report, runner, rounds, plan)
        if ending is not None and ending.success and model_delivery.wants_model(observed.job):
            assert report is not None  # a success needs the report
            ending = model_delivery.deliver(
                observed, report.model_sha256, status, plan, now, gen, runner="federation",
                done=f"all {rounds} rounds completed", committed="every charge is committed")
        if ending is not None:
            status.setdefault("federation", {})["clientsConnected"] = 0
            _owner_metrics(plan, runner["metadata"]["name"], report)
            return ending
        if _suspend(self, observed, runner, status, plan, now):
            return None
        superlink_running = any(
            _component(p) == rf.SUPERLINK and _phase(p) == "Running" for p in observed.pods)
        connected = int((status.get("federation") or {}).get("clientsConnected") or 0)
        n = len(spec.get("clients") or [])
        if superlink_running:
            set_condition(status, c.RUNNING, True, c.PODS_RUNNING,
                          f"the SuperLink is running; {connected} of {n} SuperNodes are "
                          f"running; {(status.get('federation') or {}).get('roundsCompleted') or 0}"
                          f" of {rounds} rounds completed", now=now, gen=gen)
        else:
            set_condition(status, c.RUNNING, False, c.PENDING,
                          f"waiting for the SuperLink to start ({connected} of {n} SuperNodes "
                          "running)", now=now, gen=gen)
        return None

    def teardown(self, observed: Observed) -> list[Deletion]:
        """Delete the SuperLink and SuperNode pods, the key Secrets and the model's export.

        Each in its own namespace (a data owner's SuperNode and its Secret in the owner's).
        The key Secrets are deleted by name whenever the job records them (they are never
        read, so never known to be gone; a second delete answers 404, which is fine).
        """
        out = [Deletion("Pod", p["metadata"]["name"], uid=p["metadata"].get("uid"),
                        namespace=p["metadata"].get("namespace"))
               for p in observed.pods
               if _component(p) in (rf.SUPERLINK, rf.SUPERNODE)
               and not p["metadata"].get("deletionTimestamp")]
        if rf.key_secret_recorded(observed.job):
            out.extend(Deletion("Secret", name, namespace=ns)
                       for ns, name in rf.key_secret_deletions(observed.job))
        out.extend(model_delivery.teardown(observed.job))
        return out

    def finish(self, plan: Plan, job: Obj) -> None:
        """Record on the job that its key Secret exists, once a plan creates it.

        ``act`` patches after every creation succeeded (a 409 counts: the Secret is there), so
        the record never precedes the Secret.
        """
        if any(child["kind"] == "Secret" for child in plan.create):
            plan.patches.append((KIND, job["metadata"]["name"],
                                 rf.key_secret_recorded_patch(job)))


def _suspended(job: Obj) -> bool:
    """Return whether the federation's pods must stay down (see :func:`_suspend`)."""
    status = job.get("status") or {}
    if not c.is_true(status.get("conditions"), c.ADMITTED):
        return False  # before admission the lifecycle keeps a suspended job waiting
    if (job.get("spec") or {}).get("suspend"):
        return True
    cond = c.get_condition(status.get("conditions"), c.SUSPENDED)
    return bool(status.get("startTime")) and cond is not None and cond.get("status") == "True"


def _suspend(kind: FederatedKind, observed: Observed, runner: Obj, status: Obj, plan: Plan,
             now: datetime) -> bool:
    """Pass ``spec.suspend`` on to the federation after admission; return whether it is down.

    Suspending stops the submitter (its Job's own suspend) and deletes the SuperLink and
    SuperNode pods (bare pods: nothing else would stop the Flower run), keeping every
    reservation. As for a PrivateTrainingJob, a federation that started and was suspended is
    never resumed: a new SuperLink starts the run from round 1 again, rounds nobody paid for
    (and suspend-resume could repeat them without limit). It stays suspended until deleted (the
    charges commit). One that never started resumes freely.
    """
    job = observed.job
    gen = job["metadata"].get("generation")
    want = bool((job.get("spec") or {}).get("suspend"))
    runner_suspended = bool((runner.get("spec") or {}).get("suspend"))
    down = _suspended(job) or want
    if not down:
        if runner_suspended:
            plan.patches.append(("Job", runner["metadata"]["name"], {"spec": {"suspend": False}}))
        if c.get_condition(status.get("conditions"), c.SUSPENDED) is not None:
            set_condition(status, c.SUSPENDED, False, c.RESUMED, "spec.suspend is false",
                          now=now, gen=gen)
        return False
    if not runner_suspended:
        plan.patches.append(("Job", runner["metadata"]["name"], {"spec": {"suspend": True}}))
    plan.deletions.extend(d for d in kind.teardown(observed) if d.kind == "Pod")
    status.setdefault("federation", {})["clientsConnected"] = 0
    if want:
        message = "spec.suspend is true: the federation's pods are stopped, the reservation kept"
        set_condition(status, c.SUSPENDED, True, c.SUSPENDED_BY_USER, message, now=now, gen=gen)
        set_condition(status, c.RUNNING, False, c.SUSPENDED_BY_USER, message, now=now, gen=gen)
        return True
    message = ("spec.suspend was set after the federation started: resuming would run its "
               "rounds from round 1 again, which was not paid for; delete the job (its charges "
               "are committed) and submit a new one")
    if set_condition(status, c.SUSPENDED, True, c.RESUME_NOT_PAID, message, now=now, gen=gen):
        plan.events.append(Event("Warning", c.RESUME_NOT_PAID, message))
    set_condition(status, c.RUNNING, False, c.RESUME_NOT_PAID, message, now=now, gen=gen)
    return True


FEDERATED = lifecycle.register(FederatedKind())
"""The registered FederatedJob adapter."""


def decide(observed: Observed, now: datetime) -> Plan:
    """Decide one pass of a live FederatedJob (:func:`lifecycle.decide`)."""
    return lifecycle.decide(FEDERATED, observed, now)


def decide_deletion(observed: Observed, now: datetime) -> Plan:
    """Decide one pass of deleting a FederatedJob (:func:`lifecycle.decide_deletion`)."""
    return lifecycle.decide_deletion(FEDERATED, observed, now)


def _owner_metrics(plan: Plan, runner_name: str, report: fc.FederationReport | None) -> None:
    """Post the rounds' exact loss and accuracy as an event on the submitter Job.

    They are computed on the silos' private records without noise, so they are not a DP
    release: never in the job's status or events. The submitter Job lives in the job's
    namespace for a federation on inline data (where owner and analyst are one party) and in
    the operator's namespace for one across data owners (the cluster admin's).
    """
    if report is None or not report.rounds:
        return
    parts = []
    for r in report.rounds[-10:]:
        loss = r.eval_loss if r.eval_loss is not None else r.train_loss
        parts.append(f"round {r.round}: loss {loss}, accuracy {r.accuracy}")
    plan.owner_events.append(("Job", runner_name, Event(
        "Normal", "ExactRoundMetrics",
        "; ".join(parts) + " (exact, on private records: not differentially private)")))


def _ending(report: fc.FederationReport | None, runner: Obj, rounds: int,
            plan: Plan) -> Ending | None:
    if job_condition(runner, "Complete") is not None:
        if report is not None and report.status == "Completed" and \
                report.rounds_completed >= rounds:
            return Ending(True, c.SUCCEEDED,
                          f"all {rounds} rounds completed; every charge is committed")
        detail = report.error if report is not None and report.error else "no report"
        return Ending(False, c.POD_FAILED, failed_elsewhere(
            plan, runner, "the run", "the submitter exited 0 but the run did not complete",
            detail))
    failed = job_condition(runner, "Failed")
    if failed is None:
        return None
    reason = c.DEADLINE_EXCEEDED if failed.get("reason") == "DeadlineExceeded" else c.POD_FAILED
    detail = (report.error if report is not None and report.error
              else failed.get("message")) or ""
    return Ending(False, reason, failed_elsewhere(
        plan, runner, "the federation", str(failed.get("reason")), detail))


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


def _record_federation(status: Obj, observed: Observed,
                       report: fc.FederationReport | None) -> None:
    """Write ``status.federation``: the live gauges while the run goes on, then the report."""
    federation: Obj = dict(status.get("federation") or {})
    federation["clientsConnected"] = sum(
        1 for p in observed.pods if _component(p) == rf.SUPERNODE and _phase(p) == "Running")
    if report is None and isinstance(observed.progress, fc.FederationProgress):
        _record_live(federation, observed.progress,
                     int((observed.job.get("spec") or {}).get("rounds") or 0))
    if report is not None:
        federation["roundsCompleted"] = report.rounds_completed
        if report.run_id is not None:
            federation["runId"] = str(report.run_id)
        rounds = []
        for r in report.rounds[-MAX_ROUNDS_IN_STATUS:]:
            # Never the loss or accuracy: computed on the silos' private records without noise
            # (not a DP release), they go to the owner-side event instead (_owner_metrics).
            entry: Obj = {"round": r.round, "clients": r.clients}
            if r.seconds is not None:
                entry["wallSeconds"] = repr(float(r.seconds))
            rounds.append(entry)
        if rounds:
            federation["rounds"] = rounds
    status["federation"] = federation


def _record_live(federation: Obj, progress: fc.FederationProgress, rounds: int) -> None:
    """Merge the ServerApp's live gauges into ``status.federation``.

    The count never goes back (a scrape that reads fewer rounds than recorded is stale) and
    never exceeds ``spec.rounds``; each round seen keeps its number and duration only (the
    submitter's report adds the clients, and replaces the whole list, when the run ends).
    """
    done = min(progress.rounds_completed, rounds) if rounds else progress.rounds_completed
    federation["roundsCompleted"] = max(int(federation.get("roundsCompleted") or 0), done)
    merged: dict[int, Obj] = {int(r["round"]): dict(r) for r in federation.get("rounds") or []}
    for number, seconds in progress.round_seconds.items():
        if rounds and number > rounds:
            continue
        merged.setdefault(number, {"round": number})["wallSeconds"] = repr(float(seconds))
    if merged:
        federation["rounds"] = [merged[n] for n in sorted(merged)][-MAX_ROUNDS_IN_STATUS:]


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
        (Charge(ch.budget, tuple(ch.event_dicts()), format_cost(ch.epsilon))
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
