"""The ledger under a misbehaving world: races, crashes, lost answers, deletions, restarts.

Every scenario runs for both kinds of job (the ``flavor`` fixture): a PrivateTrainingJob with
the fake trainer, and a local-DP FederatedJob of one silo running real Flower processes, both
through the one lifecycle (``operator/src/ppml_operator/reconcile/lifecycle.py``). Budgets are
sized from each kind's real price (``Flavor.cost``), so "exactly four fit" holds for both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from op_helpers import (
    FEDJOB,
    FLAVORS,
    NOWHERE,
    PTJ,
    Flavor,
    Kube,
    Operator,
    budget,
    condition,
    is_true,
    job_manifest,
    wait_for,
)

from ppml_operator.reconcile import ledger


@pytest.fixture(params=FLAVORS, ids=lambda f: f.kind)
def flavor(request: pytest.FixtureRequest) -> Flavor:
    return request.param  # type: ignore[no-any-return]


def _status(kube: Kube, name: str = "clinic") -> dict:
    return (kube.get("PrivacyBudget", name) or {}).get("status") or {}


def _charges(kube: Kube, name: str = "clinic") -> list[dict]:
    return list(_status(kube, name).get("charges") or [])


def _uid(kube: Kube, flavor: Flavor, name: str) -> str:
    return kube.get(flavor.kind, name)["metadata"]["uid"]


def _eps(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.0001")))


def _assert_charged_once(kube: Kube, flavor: Flavor, name: str) -> None:
    """The job's charge is in the ledger exactly once, committed, and it ran exactly once."""
    done = kube.job_when(name, "Complete", timeout=240, kind=flavor.kind)
    uid = done["metadata"]["uid"]
    mine = [c for c in _charges(kube) if c["jobUID"] == uid]
    assert [c["state"] for c in mine] == ["Committed"]
    assert Decimal(_status(kube)["spentEpsilon"]) == Decimal(mine[0]["epsilon"])
    assert len(kube.list("Job", f"ppml.dev/job-uid={uid}")) == 1
    # One runner pod ran once (a federation's SuperLink and SuperNode are torn down).
    wait_for("only the runner's pod left", lambda: len(
        kube.list("Pod", f"ppml.dev/job-uid={uid}")) == 1, timeout=60)


def test_many_jobs_racing_two_operators_admit_exactly_as_many_as_fit(
    kube: Kube, operator_factory: Callable[..., Operator], flavor: Flavor
) -> None:
    # A budget between what four and five such jobs compose to: exactly four fit.
    four, five = flavor.cost(4), flavor.cost(5)
    kube.apply(budget("clinic", epsilon=_eps((four + five) / 2)))
    names = [f"racer-{i:02d}" for i in range(10)]
    a, b = operator_factory(), operator_factory()
    a.start()
    b.start()  # two compare-and-swap writers on one budget
    kube.apply("\n".join(flavor.text(n, node_selector=NOWHERE) for n in names))

    def settled() -> bool:
        jobs = [kube.get(flavor.kind, n) for n in names]
        return all(condition(j, "Admitted") is not None for j in jobs)

    wait_for("every racer decided", settled, timeout=120)
    time.sleep(3)  # a few more passes of both operators: nothing more may be admitted
    admitted = [n for n in names if is_true(kube.get(flavor.kind, n), "Admitted")]
    waiting = [
        n for n in names
        if (condition(kube.get(flavor.kind, n), "Admitted") or {}).get("reason")
        == "BudgetExhausted"
    ]
    assert len(admitted) == 4 and len(waiting) == 6
    charges = _charges(kube)
    assert sorted(c["jobName"] for c in charges) == sorted(admitted)
    assert len({c["jobUID"] for c in charges}) == 4
    assert Decimal(_status(kube)["remainingEpsilon"]) >= 0


def test_ptjs_and_federations_racing_on_one_budget_with_a_crash_admit_exactly_as_many_as_fit(
    kube: Kube, operator_factory: Callable[..., Operator], tmp_path: Path
) -> None:
    """Both kinds contend for one budget; the first operator dies right after a reservation."""
    both = [(PTJ, f"ptj-{i}") for i in range(4)] + [(FEDJOB, f"fed-{i}") for i in range(4)]
    # Room for exactly two of each kind (their events differ, so they compose unevenly).
    events = []
    from ppml_operator.reconcile import kinds, lifecycle

    assert kinds.INSTALLED
    for flv in (PTJ, FEDJOB):
        obj = flv.manifest("priced")
        obj["metadata"].update({"uid": "priced", "namespace": "ns", "generation": 1})
        [charge] = lifecycle.kind_of(flv.kind).price(obj).charges
        events.append(list(charge.events))
    fits = ledger._rdp_epsilon(events[0] * 2 + events[1] * 2, Decimal("1e-5"))
    smallest_more = min(ledger._rdp_epsilon(events[0] * 3 + events[1] * 2, Decimal("1e-5")),
                        ledger._rdp_epsilon(events[0] * 2 + events[1] * 3, Decimal("1e-5")))
    kube.apply(budget("clinic", epsilon=_eps((fits + smallest_more) / 2)))
    once = str(tmp_path / "crashed")
    first = operator_factory().start(PPML_CRASH_AT="after-reserve", PPML_CRASH_ONCE_FILE=once)
    kube.apply("\n".join(flv.text(n, node_selector=NOWHERE) for flv, n in both))
    assert first.wait_exit(timeout=120) == 137
    a, b = operator_factory(), operator_factory()
    a.start()
    b.start()

    def settled() -> bool:
        return all(condition(kube.get(flv.kind, n), "Admitted") is not None for flv, n in both)

    wait_for("every job decided", settled, timeout=180)
    time.sleep(3)
    admitted = [n for flv, n in both if is_true(kube.get(flv.kind, n), "Admitted")]
    charges = _charges(kube)
    assert sorted(c["jobName"] for c in charges) == sorted(admitted)
    assert len({c["jobUID"] for c in charges}) == len(charges)  # never two charges for a job
    assert Decimal(_status(kube)["remainingEpsilon"]) >= 0  # never more than the budget pays
    waiting = [n for flv, n in both if not is_true(kube.get(flv.kind, n), "Admitted")]
    assert admitted and waiting  # the budget was contended, and filled
    assert all((condition(kube.get(flv.kind, n), "Admitted") or {}).get("reason")
               == "BudgetExhausted" for flv, n in both if n in waiting)


def test_an_older_waiting_job_is_not_overtaken_by_a_cheaper_newer_one(
    kube: Kube, flavor: Flavor
) -> None:
    one, cheap = flavor.cost(1), flavor.cost(1, noise="20")
    kube.apply(budget("clinic", epsilon=_eps(one + 2 * cheap)))  # holder + older never fit
    kube.apply(flavor.text("holder", node_selector=NOWHERE))
    kube.job_when("holder", "Admitted", kind=flavor.kind)
    kube.apply(flavor.text("older"))  # needs as much again: waits
    wait_for("older waits", lambda: (condition(kube.get(flavor.kind, "older"),
                                               "Admitted") or {}).get("reason")
             == "BudgetExhausted")
    time.sleep(1.1)  # creationTimestamp has second resolution
    kube.apply(flavor.text("newer", noise="20"))  # tiny cost: it would fit, but it is younger
    wait_for("newer decided", lambda: condition(kube.get(flavor.kind, "newer"), "Admitted"))
    time.sleep(3)
    cond = condition(kube.get(flavor.kind, "newer"), "Admitted")
    assert cond["status"] == "False" and "older" in cond["message"]
    kube.delete(flavor.kind, "holder")
    kube.job_when("older", "Complete", timeout=240, kind=flavor.kind)
    kube.job_when("newer", "Complete", timeout=240, kind=flavor.kind)


def test_a_job_on_a_dataset_and_an_inline_job_on_its_budget_keep_one_arrival_order(
    kube: Kube,
) -> None:
    """The older job reaches the budget through a PrivateDataset, the newer one inline.

    Jobs on a dataset are indexed under the dataset, inline ones under the budget; the
    operator's index of datasets by budget (``handlers/register.py``, ``dataset_budgets``)
    puts both in one queue, so the newer, cheaper inline job does not overtake.
    """
    one, cheap = PTJ.cost(1), PTJ.cost(1, noise="20")
    kube.apply(budget("clinic", epsilon=_eps(one + 2 * cheap)))  # holder + older never fit
    kube.apply(json.dumps({
        "apiVersion": "ppml.dev/v1alpha1", "kind": "PrivateDataset",
        "metadata": {"name": "digits"},
        "spec": {"budgetRef": {"name": "clinic"},
                 "data": {"source": "Builtin", "builtin": {"name": "Digits"},
                          "numRecords": 1797}}}))
    kube.apply(PTJ.text("holder", node_selector=NOWHERE))
    kube.job_when("holder", "Admitted")
    on_dataset = job_manifest("older")
    for inline in ("budgetRef", "data"):
        del on_dataset["spec"][inline]
    on_dataset["spec"]["datasetRef"] = {"name": "digits"}
    kube.apply(json.dumps(on_dataset))  # the dataset's budget must pay as much again: waits
    wait_for("older waits", lambda: (condition(kube.get(PTJ.kind, "older"),
                                               "Admitted") or {}).get("reason")
             == "BudgetExhausted")
    time.sleep(1.1)  # creationTimestamp has second resolution
    kube.apply(PTJ.text("newer", noise="20"))  # inline on the same budget: fits, but younger
    wait_for("newer decided", lambda: condition(kube.get(PTJ.kind, "newer"), "Admitted"))
    time.sleep(3)
    cond = condition(kube.get(PTJ.kind, "newer"), "Admitted")
    assert cond["status"] == "False" and "older" in cond["message"], cond
    kube.delete(PTJ.kind, "holder")
    kube.job_when("older", "Complete", timeout=240)
    kube.job_when("newer", "Complete", timeout=240)


CRASH_POINTS = (
    "after-reserve",
    "after-admit",
    "after-create-ConfigMap",
    "after-create-Job",
    "after-commit",
    "after-complete",
)


def test_operator_killed_at_every_ledger_write_boundary_converges_without_double_charge(
    kube: Kube, operator: Operator, tmp_path: Path, flavor: Flavor
) -> None:
    """One job walks through every boundary: the operator dies at each, once, and restarts."""
    kube.apply(budget("clinic", epsilon="30"))
    kube.apply(flavor.text("crashy"))
    once = str(tmp_path / "crashed")
    env = {"PPML_CRASH_AT": ",".join(CRASH_POINTS), "PPML_CRASH_ONCE_FILE": once}
    for point in CRASH_POINTS:
        operator.start(**env)
        assert operator.wait_exit(timeout=240) == 137, operator.logs()[-3000:]
        # The last crash line names this point (another thread may log a line in between).
        crashes = [line for line in operator.logs().splitlines() if "crashed at" in line]
        assert crashes and crashes[-1].endswith(f"crashed at {point}"), point
        # Whatever was interrupted: no pod without a reservation, never two charges.
        uid = _uid(kube, flavor, "crashy")
        mine = [c for c in _charges(kube) if c["jobUID"] == uid]
        assert len(mine) <= 1, point
        if kube.list("Pod", f"ppml.dev/job-uid={uid}"):
            assert mine, point
        assert len(kube.list("Job", f"ppml.dev/job-uid={uid}")) <= 1, point
    operator.start(**env)  # every point visited: it runs through now
    _assert_charged_once(kube, flavor, "crashy")


def test_a_budget_write_applied_but_its_answer_lost_is_not_charged_twice(
    kube: Kube, operator: Operator, flavor: Flavor
) -> None:
    kube.apply(budget("clinic", epsilon="30"))
    kube.apply(flavor.text("lossy"))
    operator.start(PPML_FAULTS="lose-response:PrivacyBudget/status:3")
    _assert_charged_once(kube, flavor, "lossy")
    assert "ResponseLost" in operator.logs()


def test_deleting_a_reserved_job_whose_pods_never_started_releases_its_charge(
    kube: Kube, flavor: Flavor
) -> None:
    kube.apply(budget("clinic", epsilon="30"))
    kube.apply(flavor.text("pending", node_selector=NOWHERE))
    uid = kube.job_when("pending", "Admitted", kind=flavor.kind)["metadata"]["uid"]
    wait_for("a pending pod", lambda: kube.list("Pod", f"ppml.dev/job-uid={uid}"))
    kube.delete(flavor.kind, "pending")
    kube.gone(flavor.kind, "pending")
    [charge] = _charges(kube)
    assert charge["jobUID"] == uid and charge["state"] == "Released"
    assert Decimal(_status(kube)["spentEpsilon"]) == 0
    wait_for("pods gone", lambda: not kube.list("Pod", f"ppml.dev/job-uid={uid}"))


def test_deleting_a_running_job_commits_its_charge_and_stops_its_pods(
    kube: Kube, flavor: Flavor
) -> None:
    kube.apply(budget("clinic", epsilon="30"))
    kube.apply(flavor.text("slow-run"))
    running = kube.job_when("slow-run", "Running", timeout=120, kind=flavor.kind)
    uid = running["metadata"]["uid"]
    kube.delete(flavor.kind, "slow-run")
    kube.gone(flavor.kind, "slow-run", timeout=90)
    [charge] = _charges(kube)
    assert charge["jobUID"] == uid and charge["state"] == "Committed"
    wait_for("pods gone", lambda: not kube.list("Pod", f"ppml.dev/job-uid={uid}"), timeout=90)


@pytest.mark.parametrize(("name", "selector", "settled"), [
    ("slow-down", None, "Committed"),
    ("pending-down", NOWHERE, "Released"),
])
def test_a_job_deleted_while_the_operator_is_down_is_settled_when_it_returns(
    kube: Kube, operator: Operator, name: str, selector: dict | None, settled: str,
    flavor: Flavor,
) -> None:
    kube.apply(budget("clinic", epsilon="30"))
    kube.apply(flavor.text(name, node_selector=selector))
    operator.start()
    wanted = "Running" if selector is None else "Admitted"
    uid = kube.job_when(name, wanted, timeout=120, kind=flavor.kind)["metadata"]["uid"]
    wait_for("a pod", lambda: kube.list("Pod", f"ppml.dev/job-uid={uid}"))
    operator.kill()
    kube.delete(flavor.kind, name)
    time.sleep(2)
    held = kube.get(flavor.kind, name)
    assert held is not None and "ppml.dev/finalizer" in held["metadata"]["finalizers"]
    operator.start()
    kube.gone(flavor.kind, name, timeout=90)
    [charge] = _charges(kube)
    assert charge["jobUID"] == uid and charge["state"] == settled


@pytest.mark.parametrize("point", ["after-orphan-delete", "after-release"])
def test_a_crash_while_releasing_still_releases_exactly_once(
    kube: Kube, operator: Operator, tmp_path: Path, point: str, flavor: Flavor
) -> None:
    kube.apply(budget("clinic", epsilon="30"))
    kube.apply(flavor.text("pending", node_selector=NOWHERE))
    once = str(tmp_path / "once")
    operator.start(PPML_CRASH_AT=point, PPML_CRASH_ONCE_FILE=once)
    uid = kube.job_when("pending", "Admitted", kind=flavor.kind)["metadata"]["uid"]
    wait_for("a pending pod", lambda: kube.list("Pod", f"ppml.dev/job-uid={uid}"))
    kube.delete(flavor.kind, "pending")
    assert operator.wait_exit(timeout=60) == 137
    operator.start(PPML_CRASH_AT=point, PPML_CRASH_ONCE_FILE=once)
    kube.gone(flavor.kind, "pending", timeout=90)
    [charge] = _charges(kube)
    assert charge["state"] == "Released"


def test_a_job_deleted_and_recreated_under_the_same_name_is_charged_again(
    kube: Kube, flavor: Flavor
) -> None:
    kube.apply(budget("clinic", epsilon="30"))
    kube.apply(flavor.text("again"))
    first = kube.job_when("again", "Complete", timeout=240, kind=flavor.kind)["metadata"]["uid"]
    kube.delete(flavor.kind, "again")
    kube.gone(flavor.kind, "again")
    kube.apply(flavor.text("again"))
    second = kube.job_when("again", "Complete", timeout=240, kind=flavor.kind)
    assert first != second["metadata"]["uid"]
    charges = {c["jobUID"]: c["state"] for c in _charges(kube)}
    assert charges == {first: "Committed", second["metadata"]["uid"]: "Committed"}


@pytest.mark.parametrize(("flavor_", "count", "keep"), [(PTJ, 6, 2), (FEDJOB, 3, 1)],
                         ids=["PrivateTrainingJob", "FederatedJob"])
def test_a_restart_after_many_completed_jobs_admits_nothing_again(
    kube: Kube, operator: Operator, flavor_: Flavor, count: int, keep: int
) -> None:
    flavor = flavor_
    kube.apply(budget("clinic", epsilon="60"))
    names = [f"done-{i}" for i in range(count)]
    kube.apply("\n".join(flavor.text(n) for n in names))
    operator.start(PPML_LEDGER_KEEP=str(keep))
    for n in names:
        kube.job_when(n, "Complete", timeout=300, kind=flavor.kind)
    time.sleep(2)
    before = _status(kube)
    assert before["folded"]["count"] == count - keep and len(before["charges"]) == keep
    one = before["charges"][0]["events"]
    # Folding kept the sums exact: the totals equal a recompute from every charge's events.
    recomputed = ledger.Totals(
        spent=ledger._rdp_epsilon(one * count, Decimal("1e-5")), reserved=Decimal(0),
        remaining=Decimal(0), budget=Decimal(60),
    ).status_fields()["spentEpsilon"]
    assert before["spentEpsilon"] == recomputed
    operator.stop()
    operator.start(PPML_LEDGER_KEEP=str(keep))
    time.sleep(6)
    after = _status(kube)
    assert after["charges"] == before["charges"] and after["folded"] == before["folded"]
    assert after["spentEpsilon"] == before["spentEpsilon"]
    assert len(kube.list("Job")) == count


def test_two_writers_from_one_stale_read_conflict_and_the_loser_retries(
    kube: Kube, operator: Operator
) -> None:
    """The compare-and-swap itself: a write based on a stale resourceVersion is refused (409).

    ``operator`` is never started: this namespace is one no operator writes to.
    """
    from ppml_operator import k8s
    from ppml_operator.privacy import DpSgdEvent
    from ppml_operator.reconcile.ledger import ChargeRequest, canonical_events, reserve

    kube.apply(budget("clinic", epsilon="10"))
    evs = canonical_events([DpSgdEvent(Decimal("1.1"), Decimal("0.04"), 25)])
    stale = kube.get("PrivacyBudget", "clinic")
    stale.setdefault("kind", "PrivacyBudget")
    writes = []
    for uid in ("writer-a", "writer-b"):
        out = reserve(stale, ChargeRequest(uid, "PrivateTrainingJob", uid, kube.namespace, evs,
                                           "1"), now="2026-12-01T10:00:00Z")
        writes.append({**stale, "status": out.status})
    kube.client.replace_status(writes[0])
    with pytest.raises(k8s.ConflictError):
        kube.client.replace_status(writes[1])
    assert [c["jobUID"] for c in _charges(kube)] == ["writer-a"]  # the loser wrote nothing
    fresh = kube.get("PrivacyBudget", "clinic")
    fresh.setdefault("kind", "PrivacyBudget")
    out = reserve(fresh, ChargeRequest("writer-b", "PrivateTrainingJob", "writer-b",
                                       kube.namespace, evs, "1"), now="2026-12-01T10:00:01Z")
    kube.client.replace_status({**fresh, "status": out.status})
    assert sorted(c["jobUID"] for c in _charges(kube)) == ["writer-a", "writer-b"]


def test_the_operator_serves_prometheus_metrics(kube: Kube, operator: Operator) -> None:
    import socket
    import urllib.request

    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    port, liveness = ports
    kube.apply(budget("clinic", epsilon="3"))
    kube.apply(PTJ.text("metered"))
    operator.start("--metrics-port", str(port), "--liveness-port", str(liveness))
    kube.job_when("metered", "Complete")
    with urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=5) as r:
        assert r.status == 200

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()

    text = wait_for("metrics", lambda: "ppml_budget_epsilon" in (t := scrape()) and t)
    assert f'ppml_admissions_total{{kind="PrivateTrainingJob",namespace="{kube.namespace}"}} 1.0' \
        in text
    assert 'ppml_ledger_writes_total{operation="reserve",result="ok"} 1.0' in text
    assert 'ppml_ledger_writes_total{operation="commit",result="ok"} 1.0' in text
    assert "ppml_admission_latency_seconds_bucket" in text
    spent = [line for line in text.splitlines()
             if line.startswith("ppml_budget_epsilon") and 'state="spent"' in line]
    assert spent and float(spent[0].split()[-1]) > 0
