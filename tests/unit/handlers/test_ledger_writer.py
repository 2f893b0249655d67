"""Group commit (handlers/ledger_writer.py): batching, 409s, and one bad member among many.

The store here is a stand-in for exactly one behaviour of the API server that the writer relies
on, the compare-and-swap of ``PUT .../status`` on resourceVersion (and a 422 for an entry the
schema refuses); the real server's behaviour is proven in tests/integration/operator
(test_reliability.py, test_two_writers_from_one_stale_read_conflict_and_the_loser_retries).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from ppml_operator import k8s
from ppml_operator.handlers import ledger_writer
from ppml_operator.reconcile.lifecycle import Observed
from ppml_operator.reconcile.plan import BudgetWrite, Plan

Obj = dict[str, Any]
LOG = logging.getLogger("test")


class Store:
    """One budget behind a compare-and-swap; refuses entries named ``bad-*`` with a 422."""

    def __init__(self) -> None:
        self.budget: Obj = {"kind": "PrivacyBudget",
                            "metadata": {"name": "clinic", "namespace": "ns",
                                         "resourceVersion": "1"},
                            "spec": {"epsilon": "3"}, "status": {"charges": []}}
        self.writes = 0
        self.lock = threading.Lock()

    def replace_status(self, obj: Obj) -> Obj:
        time.sleep(0.05)  # a round trip: passes arriving meanwhile queue behind the leader
        with self.lock:
            self.writes += 1
            rv = obj["metadata"]["resourceVersion"]
            if rv != self.budget["metadata"]["resourceVersion"]:
                raise k8s.ConflictError(409, "Conflict", "the object has been modified")
            if any(c["jobUID"].startswith("bad-") for c in obj["status"]["charges"]):
                raise k8s.KubernetesError(422, "Invalid", "status.charges[1].delta: Too long")
            stored = copy.deepcopy(obj)
            stored["metadata"]["resourceVersion"] = str(int(rv) + 1)
            self.budget = stored
            return copy.deepcopy(stored)


def reserve_plan(uid: str) -> Any:
    """A decide that reserves ``uid`` on whatever budget it observes (idempotent)."""

    def decide(observed: Observed, now: datetime) -> Plan:
        budget = observed.budgets["clinic"]
        assert budget is not None
        charges = list((budget.get("status") or {}).get("charges") or [])
        if any(c["jobUID"] == uid for c in charges):
            return Plan()
        status = {"charges": [*charges, {"jobUID": uid, "state": "Reserved"}]}
        return Plan(budget_writes=[BudgetWrite(budget, status, "reserve", uid, f"reserved {uid}")])

    return decide


def write(store: Store, uid: str, budget: Obj) -> Plan:
    decide = reserve_plan(uid)
    observed = Observed(job={"metadata": {"uid": uid}}, budgets={"clinic": budget}, price=None)
    plan = decide(observed, datetime.now(UTC))
    return ledger_writer.write_ledger(store, observed, plan, decide,  # type: ignore[arg-type]
                                      lambda: datetime.now(UTC), LOG)


def race(store: Store, uids: list[str]) -> dict[str, BaseException | None]:
    """Every pass observes the same budget version, then all write at once."""
    seen = copy.deepcopy(store.budget)
    outcome: dict[str, BaseException | None] = {}
    start = threading.Barrier(len(uids))

    def run(uid: str) -> None:
        start.wait()
        try:
            write(store, uid, seen)
            outcome[uid] = None
        except BaseException as err:
            outcome[uid] = err

    threads = [threading.Thread(target=run, args=(u,)) for u in uids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return outcome


@pytest.fixture(autouse=True)
def fresh_queues() -> None:
    ledger_writer._queues.clear()


def test_concurrent_passes_on_one_budget_all_land_from_one_stale_read() -> None:
    store = Store()
    uids = [f"job-{i}" for i in range(8)]
    outcome = race(store, uids)
    assert outcome == dict.fromkeys(uids)
    assert sorted(c["jobUID"] for c in store.budget["status"]["charges"]) == sorted(uids)
    assert store.writes < len(uids)  # batched: fewer writes than passes


def test_one_member_whose_entry_is_refused_fails_alone() -> None:
    store = Store()
    uids = ["job-a", "bad-b", "job-c", "job-d"]
    outcome = race(store, uids)
    assert isinstance(outcome["bad-b"], k8s.KubernetesError)
    assert outcome["bad-b"].status == 422
    assert {u: e for u, e in outcome.items() if u != "bad-b"} == dict.fromkeys(
        ["job-a", "job-c", "job-d"])
    assert sorted(c["jobUID"] for c in store.budget["status"]["charges"]) == [
        "job-a", "job-c", "job-d"]


def test_a_lost_race_against_another_writer_fails_the_batch_and_applies_nothing() -> None:
    store = Store()
    stale = copy.deepcopy(store.budget)
    store.replace_status({**copy.deepcopy(store.budget),
                          "status": {"charges": [{"jobUID": "other", "state": "Reserved"}]}})
    with pytest.raises(k8s.ConflictError):
        write(store, "job-a", stale)
    assert [c["jobUID"] for c in store.budget["status"]["charges"]] == ["other"]
