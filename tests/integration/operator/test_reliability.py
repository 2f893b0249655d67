"""The ledger under a misbehaving world: races, crashes, lost answers, deletions, restarts."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from op_helpers import NOWHERE, Kube, Operator, budget, condition, is_true, job, wait_for

from ppml_operator.reconcile import ledger


def _status(kube: Kube, name: str = "clinic") -> dict:
    return (kube.get("PrivacyBudget", name) or {}).get("status") or {}


def _charges(kube: Kube, name: str = "clinic") -> list[dict]:
    return list(_status(kube, name).get("charges") or [])


def _uid(kube: Kube, name: str) -> str:
    return kube.get("PrivateTrainingJob", name)["metadata"]["uid"]


def _assert_charged_once(kube: Kube, name: str) -> None:
    """The job's charge is in the ledger exactly once, committed, and it ran exactly once."""
    done = kube.job_when(name, "Complete", timeout=120)
    uid = done["metadata"]["uid"]
    mine = [c for c in _charges(kube) if c["jobUID"] == uid]
    assert [c["state"] for c in mine] == ["Committed"]
    assert Decimal(_status(kube)["spentEpsilon"]) == Decimal(mine[0]["epsilon"])
    assert len(kube.list("Job", f"ppml.dev/job-uid={uid}")) == 1
    assert len(kube.list("Pod", f"ppml.dev/job-uid={uid}")) == 1


def test_many_jobs_racing_two_operators_admit_exactly_as_many_as_fit(
    kube: Kube, operator_factory: Callable[..., Operator]
) -> None:
    # 1.89 each; four compose to 2.869 <= 2.9, five to 3.125: exactly four fit.
    kube.apply(budget("clinic", epsilon="2.9"))
    names = [f"racer-{i:02d}" for i in range(10)]
    a, b = operator_factory(), operator_factory()
    a.start()
    b.start()  # two compare-and-swap writers on one budget
    kube.apply("\n".join(job(n, node_selector=NOWHERE) for n in names))

    def settled() -> bool:
        jobs = [kube.get("PrivateTrainingJob", n) for n in names]
        return all(condition(j, "Admitted") is not None for j in jobs)

    wait_for("every racer decided", settled, timeout=120)
    time.sleep(3)  # a few more passes of both operators: nothing more may be admitted
    admitted = [n for n in names if is_true(kube.get("PrivateTrainingJob", n), "Admitted")]
    waiting = [
        n for n in names
        if (condition(kube.get("PrivateTrainingJob", n), "Admitted") or {}).get("reason")
        == "BudgetExhausted"
    ]
    assert len(admitted) == 4 and len(waiting) == 6
    charges = _charges(kube)
    assert sorted(c["jobName"] for c in charges) == sorted(admitted)
    assert len({c["jobUID"] for c in charges}) == 4
    assert Decimal(_status(kube)["remainingEpsilon"]) >= 0


def test_an_older_waiting_job_is_not_overtaken_by_a_cheaper_newer_one(
    kube: Kube
) -> None:
    kube.apply(budget("clinic", epsilon="2"))
    kube.apply(job("holder", node_selector=NOWHERE))
    kube.job_when("holder", "Admitted")
    kube.apply(job("older"))  # needs 1.89 more: waits
    wait_for("older waits", lambda: (condition(kube.get("PrivateTrainingJob", "older"),
                                               "Admitted") or {}).get("reason")
             == "BudgetExhausted")
    time.sleep(1.1)  # creationTimestamp has second resolution
    kube.apply(job("newer", noise="20"))  # tiny cost: it would fit, but it is younger
    cond = wait_for("newer waits", lambda: condition(kube.get("PrivateTrainingJob", "newer"),
                                                     "Admitted"))
    time.sleep(3)
    cond = condition(kube.get("PrivateTrainingJob", "newer"), "Admitted")
    assert cond["status"] == "False" and "older" in cond["message"]
    kube.delete("PrivateTrainingJob", "holder")
    kube.job_when("older", "Complete", timeout=90)
    kube.job_when("newer", "Complete", timeout=90)


CRASH_POINTS = (
    "after-reserve",
    "after-admit",
    "after-create-ConfigMap",
    "after-create-Job",
    "after-commit",
    "after-complete",
)


def test_operator_killed_at_every_ledger_write_boundary_converges_without_double_charge(
    kube: Kube, operator: Operator, tmp_path: Path
) -> None:
    """One job walks through every boundary: the operator dies at each, once, and restarts."""
    kube.apply(budget("clinic", epsilon="3"))
    kube.apply(job("crashy"))
    once = str(tmp_path / "crashed")
    env = {"PPML_CRASH_AT": ",".join(CRASH_POINTS), "PPML_CRASH_ONCE_FILE": once}
    for point in CRASH_POINTS:
        operator.start(**env)
        assert operator.wait_exit(timeout=120) == 137, operator.logs()[-3000:]
        assert operator.logs().rstrip().endswith(f"crashed at {point}"), point
        # Whatever was interrupted: no pod without a reservation, never two charges.
        uid = _uid(kube, "crashy")
        mine = [c for c in _charges(kube) if c["jobUID"] == uid]
        assert len(mine) <= 1, point
        if kube.list("Pod", f"ppml.dev/job-uid={uid}"):
            assert mine, point
        assert len(kube.list("Job", f"ppml.dev/job-uid={uid}")) <= 1, point
    operator.start(**env)  # every point visited: it runs through now
    _assert_charged_once(kube, "crashy")


def test_a_budget_write_applied_but_its_answer_lost_is_not_charged_twice(
    kube: Kube, operator: Operator
) -> None:
    kube.apply(budget("clinic", epsilon="3"))
    kube.apply(job("lossy"))
    operator.start(PPML_FAULTS="lose-response:PrivacyBudget/status:3")
    _assert_charged_once(kube, "lossy")
    assert "ResponseLost" in operator.logs()


def test_deleting_a_reserved_job_whose_pods_never_started_releases_its_charge(
    kube: Kube
) -> None:
    kube.apply(budget("clinic"))
    kube.apply(job("pending", node_selector=NOWHERE))
    uid = kube.job_when("pending", "Admitted")["metadata"]["uid"]
    wait_for("a pending pod", lambda: kube.list("Pod", f"ppml.dev/job-uid={uid}"))
    kube.delete("PrivateTrainingJob", "pending")
    kube.gone("PrivateTrainingJob", "pending")
    [charge] = _charges(kube)
    assert charge["jobUID"] == uid and charge["state"] == "Released"
    assert Decimal(_status(kube)["spentEpsilon"]) == 0
    wait_for("pods gone", lambda: not kube.list("Pod", f"ppml.dev/job-uid={uid}"))


def test_deleting_a_running_job_commits_its_charge_and_stops_its_pods(
    kube: Kube
) -> None:
    kube.apply(budget("clinic"))
    kube.apply(job("slow-run"))
    running = kube.job_when("slow-run", "Running", timeout=90)
    uid = running["metadata"]["uid"]
    kube.delete("PrivateTrainingJob", "slow-run")
    kube.gone("PrivateTrainingJob", "slow-run")
    [charge] = _charges(kube)
    assert charge["jobUID"] == uid and charge["state"] == "Committed"
    wait_for("pods gone", lambda: not kube.list("Pod", f"ppml.dev/job-uid={uid}"), timeout=90)


@pytest.mark.parametrize(("name", "selector", "settled"), [
    ("slow-down", None, "Committed"),
    ("pending-down", NOWHERE, "Released"),
])
def test_a_job_deleted_while_the_operator_is_down_is_settled_when_it_returns(
    kube: Kube, operator: Operator, name: str, selector: dict | None, settled: str
) -> None:
    kube.apply(budget("clinic"))
    kube.apply(job(name, node_selector=selector))
    operator.start()
    wanted = "Running" if selector is None else "Admitted"
    uid = kube.job_when(name, wanted, timeout=90)["metadata"]["uid"]
    wait_for("a pod", lambda: kube.list("Pod", f"ppml.dev/job-uid={uid}"))
    operator.kill()
    kube.delete("PrivateTrainingJob", name)
    time.sleep(2)
    held = kube.get("PrivateTrainingJob", name)
    assert held is not None and "ppml.dev/finalizer" in held["metadata"]["finalizers"]
    operator.start()
    kube.gone("PrivateTrainingJob", name, timeout=90)
    [charge] = _charges(kube)
    assert charge["jobUID"] == uid and charge["state"] == settled


@pytest.mark.parametrize("point", ["after-orphan-delete", "after-release"])
def test_a_crash_while_releasing_still_releases_exactly_once(
    kube: Kube, operator: Operator, tmp_path: Path, point: str
) -> None:
    kube.apply(budget("clinic"))
    kube.apply(job("pending", node_selector=NOWHERE))
    once = str(tmp_path / "once")
    operator.start(PPML_CRASH_AT=point, PPML_CRASH_ONCE_FILE=once)
    uid = kube.job_when("pending", "Admitted")["metadata"]["uid"]
    wait_for("a pending pod", lambda: kube.list("Pod", f"ppml.dev/job-uid={uid}"))
    kube.delete("PrivateTrainingJob", "pending")
    assert operator.wait_exit(timeout=60) == 137
    operator.start(PPML_CRASH_AT=point, PPML_CRASH_ONCE_FILE=once)
    kube.gone("PrivateTrainingJob", "pending", timeout=90)
    [charge] = _charges(kube)
    assert charge["state"] == "Released"


def test_a_job_deleted_and_recreated_under_the_same_name_is_charged_again(
    kube: Kube
) -> None:
    kube.apply(budget("clinic", epsilon="3"))
    kube.apply(job("again"))
    first = kube.job_when("again", "Complete")["metadata"]["uid"]
    kube.delete("PrivateTrainingJob", "again")
    kube.gone("PrivateTrainingJob", "again")
    kube.apply(job("again"))
    second = kube.job_when("again", "Complete", timeout=90)["metadata"]["uid"]
    assert first != second
    charges = {c["jobUID"]: c["state"] for c in _charges(kube)}
    assert charges == {first: "Committed", second: "Committed"}


def test_a_restart_after_many_completed_jobs_admits_nothing_again(
    kube: Kube, operator: Operator
) -> None:
    kube.apply(budget("clinic", epsilon="20"))
    names = [f"done-{i}" for i in range(6)]
    kube.apply("\n".join(job(n) for n in names))
    operator.start(PPML_LEDGER_KEEP="2")
    for n in names:
        kube.job_when(n, "Complete", timeout=120)
    time.sleep(2)
    before = _status(kube)
    assert before["folded"]["count"] == 4 and len(before["charges"]) == 2
    one = before["charges"][0]["events"]
    # Folding kept the sums exact: the totals equal a recompute from the six charges' events.
    recomputed = ledger.Totals(
        spent=ledger._rdp_epsilon(one * 6, Decimal("1e-5")), reserved=Decimal(0),
        remaining=Decimal(0), budget=Decimal(20),
    ).status_fields()["spentEpsilon"]
    assert before["spentEpsilon"] == recomputed
    operator.stop()
    operator.start(PPML_LEDGER_KEEP="2")
    time.sleep(6)
    after = _status(kube)
    assert after["charges"] == before["charges"] and after["folded"] == before["folded"]
    assert after["spentEpsilon"] == before["spentEpsilon"]
    assert len(kube.list("Job")) == 6 and len(kube.list("Pod")) == 6


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
    kube.apply(job("metered"))
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
