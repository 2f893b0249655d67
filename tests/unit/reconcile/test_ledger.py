"""The pure ledger: idempotency, all-or-nothing, folding keeps sums exact, spent never decreases."""

from __future__ import annotations

import functools
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml_operator.privacy import DpSgdEvent, epsilon_of, event_from_dict
from ppml_operator.privacy.decimals import format_cost
from ppml_operator.reconcile import ledger
from ppml_operator.reconcile.ledger import ChargeRequest, Result

DELTA = Decimal("1e-5")
NOW = "2026-12-01T10:00:00Z"


def events(noise: str = "1.1", rate: str = "0.04", steps: int = 25) -> tuple[dict, ...]:
    return ledger.canonical_events([DpSgdEvent(Decimal(noise), Decimal(rate), steps)])


@functools.cache
def standalone(noise: str, steps: int) -> str:
    return format_cost(epsilon_of([event_from_dict(e) for e in events(noise, steps=steps)], DELTA))


def request(uid: str, noise: str = "1.1", steps: int = 25) -> ChargeRequest:
    evs = events(noise, steps=steps)
    return ChargeRequest(uid, "PrivateTrainingJob", f"job-{uid}", "ns", evs,
                         standalone(noise, steps))


def budget(epsilon: str = "3", composition: str = "RDP", status: dict | None = None) -> dict:
    obj = {
        "kind": "PrivacyBudget",
        "metadata": {"name": "clinic", "namespace": "ns", "resourceVersion": "7"},
        "spec": {"epsilon": epsilon, "delta": "1e-5", "composition": composition},
    }
    if status is not None:
        obj["status"] = status
    return obj


def apply(b: dict, outcome: ledger.Outcome) -> dict:
    assert outcome.status is not None, outcome
    return {**b, "status": outcome.status}


def test_reserve_adds_one_entry_with_the_charge_and_composed_totals() -> None:
    req = request("a")
    out = ledger.reserve(budget(), req, now=NOW)
    assert out.result is Result.RESERVED
    [entry] = out.status["charges"]
    assert entry["jobUID"] == "a" and entry["state"] == "Reserved"
    assert entry["events"] == list(req.events) and entry["epsilon"] == req.epsilon
    assert out.status["spentEpsilon"] == "0"
    assert out.status["reservedEpsilon"] == req.epsilon


@pytest.mark.parametrize(("state", "result"), [
    ("Reserved", Result.ALREADY_RESERVED),
    ("Committed", Result.ALREADY_COMMITTED),
])
def test_reserving_a_job_already_in_the_ledger_writes_nothing(state: str, result: Result) -> None:
    b = apply(budget(), ledger.reserve(budget(), request("a"), now=NOW))
    if state == "Committed":
        b = apply(b, ledger.commit(b, "a", now=NOW))
    again = ledger.reserve(b, request("a"), now=NOW)
    assert again.result is result and again.status is None


def test_a_charge_that_does_not_fit_now_is_exhausted_and_names_the_figures() -> None:
    b = apply(budget("2"), ledger.reserve(budget("2"), request("a"), now=NOW))
    out = ledger.reserve(b, request("b"), now=NOW)
    assert out.result is Result.EXHAUSTED and out.status is None
    assert out.message.startswith("budget clinic has epsilon ")
    assert "at delta 0.00001; this job needs " in out.message


def test_a_charge_larger_than_what_is_left_unspent_never_fits() -> None:
    out = ledger.reserve(budget("1"), request("a", noise="0.8"), now=NOW)
    assert out.result is Result.NEVER_FITS and "can never be admitted" in out.message


def test_exhausted_becomes_never_fits_once_the_blocking_charge_is_committed() -> None:
    b = apply(budget("2"), ledger.reserve(budget("2"), request("a"), now=NOW))
    assert ledger.reserve(b, request("b"), now=NOW).result is Result.EXHAUSTED
    b = apply(b, ledger.commit(b, "a", now=NOW))
    assert ledger.reserve(b, request("b"), now=NOW).result is Result.NEVER_FITS


def test_release_frees_the_reservation_and_commit_is_final() -> None:
    b = apply(budget("2"), ledger.reserve(budget("2"), request("a"), now=NOW))
    released = apply(b, ledger.release(b, "a", now=NOW))
    assert released["status"]["charges"][0]["state"] == "Released"
    assert ledger.reserve(released, request("b"), now=NOW).result is Result.RESERVED
    committed = apply(b, ledger.commit(b, "a", now=NOW))
    again = ledger.release(committed, "a", now=NOW)
    assert again.result is Result.ALREADY_COMMITTED and again.status is None
    assert ledger.commit(released, "a", now=NOW).result is Result.ALREADY_RELEASED


def test_a_released_charge_can_be_reserved_again_by_the_same_job() -> None:
    b = apply(budget(), ledger.reserve(budget(), request("a"), now=NOW))
    b = apply(b, ledger.release(b, "a", now=NOW))
    out = ledger.reserve(b, request("a"), now=NOW)
    assert out.result is Result.RESERVED
    assert [c["state"] for c in out.status["charges"]] == ["Reserved"]


def test_basic_composition_sums_the_standalone_epsilons() -> None:
    b = budget("10", composition="Basic")
    for uid in "abc":
        b = apply(b, ledger.reserve(b, request(uid), now=NOW))
    one = Decimal(request("a").epsilon)
    assert Decimal(b["status"]["reservedEpsilon"]) == 3 * one


def test_rdp_composition_fits_more_than_basic_summation() -> None:
    fits = {}
    for composition in ("RDP", "Basic"):
        b = budget("8", composition=composition)
        count = 0
        while True:
            out = ledger.reserve(b, request(f"j{count}"), now=NOW)
            if out.status is None:
                break
            b, count = apply(b, out), count + 1
        fits[composition] = count
    assert fits["RDP"] > fits["Basic"] >= 1


def test_folding_keeps_every_total_exact_and_the_object_small() -> None:
    b = budget("50")
    for i in range(12):
        b = apply(b, ledger.reserve(b, request(f"j{i}", steps=20 + i % 3), now=NOW))
        b = apply(b, ledger.commit(b, f"j{i}", now=f"2026-12-01T10:00:{i:02d}Z", keep=1000))
    unfolded = ledger.totals(b)
    folded_status = ledger.fold(b, b["status"], keep=3)
    folded = ledger.totals(b, folded_status)
    assert folded == unfolded
    assert folded_status["folded"]["count"] == 9 and len(folded_status["charges"]) == 3
    kept = sorted(c["jobUID"] for c in folded_status["charges"])
    assert kept == ["j10", "j11", "j9"]  # the newest committed ones stay itemised
    # Identical event types merge: nine DP-SGD charges become one event per (noise, rate).
    assert len(folded_status["folded"]["events"]) == 1
    assert folded_status["folded"]["events"][0]["steps"] == sum(20 + i % 3 for i in range(9))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["reserve", "commit", "release"]),
                          st.integers(0, 5)), max_size=25),
       st.integers(0, 3))
def test_spent_never_decreases_whatever_the_sequence(ops: list[tuple[str, int]], keep: int) -> None:
    b = budget("6")
    spent = Decimal(0)
    committed: set[str] = set()
    for op, n in ops:
        uid = f"u{n}"
        if op == "reserve":
            out = ledger.reserve(b, request(uid, steps=10 + n), now=NOW)
        elif op == "commit":
            out = ledger.commit(b, uid, now=NOW, keep=keep)
        else:
            out = ledger.release(b, uid, now=NOW)
        if out.status is not None:
            b = {**b, "status": out.status}
        if out.result is Result.COMMITTED:
            committed.add(uid)
        now_spent = ledger.totals(b).spent
        assert now_spent >= spent
        spent = now_spent
    # A committed charge is never released and never charged twice.
    uids = [c["jobUID"] for c in (b.get("status") or {}).get("charges") or []]
    assert len(uids) == len(set(uids))
    folded = ((b.get("status") or {}).get("folded") or {}).get("count", 0)
    live_committed = {c["jobUID"] for c in (b.get("status") or {}).get("charges") or []
                      if c["state"] == "Committed"}
    assert len(live_committed) + folded == len(committed)


def test_repeat_events_charges_every_attempt() -> None:
    evs = events(steps=25)
    assert ledger.repeat_events(evs, 3)[0]["steps"] == 75
