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
def standalone(noise: str, steps: int, delta: Decimal = DELTA) -> str:
    return format_cost(epsilon_of([event_from_dict(e) for e in events(noise, steps=steps)], delta))


def request(uid: str, noise: str = "1.1", steps: int = 25, delta: str | None = None
            ) -> ChargeRequest:
    """A job's charge; its epsilon is computed at its own delta (the budget's when None)."""
    evs = events(noise, steps=steps)
    at = DELTA if delta is None else Decimal(delta)
    return ChargeRequest(uid, "PrivateTrainingJob", f"job-{uid}", "ns", evs,
                         standalone(noise, steps, at), delta=delta)


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
        b = apply(b, ledger.reserve(b, request(uid, delta="0.000003"), now=NOW))
    one = Decimal(request("a", delta="0.000003").epsilon)
    assert Decimal(b["status"]["reservedEpsilon"]) == 3 * one
    assert [c["delta"] for c in b["status"]["charges"]] == ["0.000003"] * 3


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
        if op == "reserve" and uid in committed and ledger.find_charge(b, uid) is None:
            # A finished job's own status stops it from reserving again once its charge is
            # folded (docs/ledger.md, "Keeping the object small"); the ledger cannot.
            continue
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


# Basic composition spends (sum of epsilons, sum of deltas): each job's delta adds up, and a
# charge fits only if both sums stay within the budget (as LedgerAccount and `ppml budget plan`
# decide). Each case: budget epsilon, composition, the jobs' deltas (None: the budget's),
# then the results of reserving them one after the other.
BASIC_CASES = [
    pytest.param("10", "Basic", ["0.00001", "0.00001"], [Result.RESERVED, Result.EXHAUSTED],
                 id="two-jobs-at-the-budget-delta-under-basic-the-second-waits"),
    pytest.param("10", "Basic", [None, None], [Result.RESERVED, Result.EXHAUSTED],
                 id="jobs-without-a-delta-spend-the-budget-delta-under-basic"),
    pytest.param("10", "Basic", ["0.000005", "0.000005", "0.000005"],
                 [Result.RESERVED, Result.RESERVED, Result.EXHAUSTED],
                 id="two-jobs-at-half-the-delta-fit-under-basic-a-third-waits"),
    pytest.param("2", "Basic", ["0.000005", "0.000005"], [Result.RESERVED, Result.EXHAUSTED],
                 id="half-the-delta-each-still-waits-when-epsilon-runs-out"),
    pytest.param("10", "Basic", ["0.00002"], [Result.NEVER_FITS],
                 id="a-job-whose-delta-exceeds-the-budget-delta-never-fits-under-basic"),
    pytest.param("10", "RDP", ["0.00001", "0.00001", "0.00001"],
                 [Result.RESERVED, Result.RESERVED, Result.RESERVED],
                 id="rdp-is-unchanged-deltas-do-not-add-up"),
]


@pytest.mark.parametrize(("epsilon", "composition", "deltas", "results"), BASIC_CASES)
def test_basic_composition_adds_up_the_deltas_too(
    epsilon: str, composition: str, deltas: list[str | None], results: list[Result]
) -> None:
    b = budget(epsilon, composition=composition)
    seen = []
    for i, delta in enumerate(deltas):
        out = ledger.reserve(b, request(f"j{i}", delta=delta), now=NOW)
        seen.append(out.result)
        if out.status is not None:
            b = apply(b, out)
    assert seen == results


def test_a_basic_charge_waiting_on_delta_says_which_limit_is_hit() -> None:
    b = budget("10", composition="Basic")
    b = apply(b, ledger.reserve(b, request("a", delta="0.00001"), now=NOW))
    out = ledger.reserve(b, request("b", delta="0.00001"), now=NOW)
    assert out.result is Result.EXHAUSTED
    assert out.message == ("budget clinic has delta 0 left of 0.00001 under Basic composition; "
                           "this job needs 0.00001")
    # Released charges spend no delta; committed ones spend it for good.
    released = apply(b, ledger.release(b, "a", now=NOW))
    assert ledger.reserve(released, request("b", delta="0.00001"), now=NOW).result is (
        Result.RESERVED)
    committed = apply(b, ledger.commit(b, "a", now=NOW))
    never = ledger.reserve(committed, request("b", delta="0.00001"), now=NOW)
    assert never.result is Result.NEVER_FITS
    assert never.message.endswith("this job needs 0.00001, so it can never be admitted")
    assert "has delta 0 left unspent of 0.00001 under Basic composition" in never.message


def test_a_basic_charge_waiting_on_epsilon_still_names_epsilon() -> None:
    b = budget("3", composition="Basic")
    b = apply(b, ledger.reserve(b, request("a", delta="0.000001"), now=NOW))
    out = ledger.reserve(b, request("b", delta="0.000001"), now=NOW)
    assert out.result is Result.EXHAUSTED
    assert out.message.startswith("budget clinic has epsilon ")


def test_an_old_charge_without_a_delta_counts_the_whole_budget_delta() -> None:
    b = budget("10", composition="Basic")
    b = apply(b, ledger.reserve(b, request("a", delta="0.000001"), now=NOW))
    del b["status"]["charges"][0]["delta"]  # as written before charges recorded their delta
    out = ledger.reserve(b, request("b", delta="0.000001"), now=NOW)
    assert out.result is Result.EXHAUSTED and "has delta 0 left" in out.message


def test_folding_keeps_the_delta_sum_of_basic_charges() -> None:
    b = budget("50", composition="Basic")
    for i in range(6):
        b = apply(b, ledger.reserve(b, request(f"j{i}", delta="0.000001"), now=NOW))
        b = apply(b, ledger.commit(b, f"j{i}", now=f"2026-12-01T10:00:{i:02d}Z", keep=1000))
    folded_status = ledger.fold(b, b["status"], keep=2)
    assert folded_status["folded"]["count"] == 4
    assert Decimal(folded_status["folded"]["basicDelta"]) == Decimal("0.000004")
    assert ledger.totals(b, folded_status) == ledger.totals(b)
    b = {**b, "status": folded_status}
    # 6e-6 spent (4e-6 folded, 2e-6 itemised): four more at 1e-6 fit, the fifth waits on delta.
    seen = []
    for i in range(6, 11):
        out = ledger.reserve(b, request(f"j{i}", delta="0.000001"), now=NOW)
        seen.append(out.result)
        if out.status is not None:
            b = apply(b, out)
    assert seen == [Result.RESERVED] * 4 + [Result.EXHAUSTED]
    # Folded again, the delta sum carries over the earlier aggregate.
    for i in range(6, 10):
        b = apply(b, ledger.commit(b, f"j{i}", now=f"2026-12-01T10:01:{i:02d}Z", keep=1000))
    refolded = ledger.fold(b, b["status"], keep=0)
    assert Decimal(refolded["folded"]["basicDelta"]) == Decimal("0.00001")
    assert refolded["folded"]["count"] == 10


def test_folded_charges_without_a_delta_sum_spend_the_whole_basic_delta() -> None:
    b = budget("50", composition="Basic")
    b = apply(b, ledger.reserve(b, request("a", delta="0.000001"), now=NOW))
    b = apply(b, ledger.commit(b, "a", now=NOW, keep=0))
    assert b["status"]["folded"]["basicDelta"] == "0.000001"
    del b["status"]["folded"]["basicDelta"]  # as folded before the delta sum was kept
    out = ledger.reserve(b, request("b", delta="0.000001"), now=NOW)
    assert out.result is Result.NEVER_FITS and "has delta 0 left unspent" in out.message


def _valid_on_the_api_server(b: dict) -> None:
    """The status must pass the CRD's schema (the models mirror it), or the write gets a 422."""
    from ppml_operator.api.v1alpha1 import PrivacyBudget

    PrivacyBudget.model_validate(b)


@pytest.mark.parametrize("delta", ["1e-31", "1.234567890123456789e-40", "4.9e-324"])
def test_a_tiny_delta_is_written_exactly_within_the_fields_limit(delta: str) -> None:
    """Issue 13: delta 1e-31 was written as a 33-character decimal, over the 32-character limit.

    The API server refused every write of that ledger ("status.charges[1].delta: Too long"),
    so the job was retried forever and every other job in the same batched write failed too.
    """
    b = budget("1000", composition="Basic")
    out = ledger.reserve(b, request("tiny", delta=delta), now=NOW)
    assert out.result is Result.RESERVED
    [entry] = out.status["charges"]
    assert Decimal(entry["delta"]) == Decimal(delta)
    _valid_on_the_api_server(apply(b, out))


def test_folding_a_delta_sum_too_long_for_the_field_keeps_it_writable() -> None:
    # 1e-40 + 3e-67 has 28 significant digits: 69 characters plain, over folded's 64.
    b = budget("1000", composition="Basic")
    for uid, delta in (("a", "1e-40"), ("b", "3e-67")):
        b = apply(b, ledger.reserve(b, request(uid, delta=delta), now=NOW))
        b = apply(b, ledger.commit(b, uid, now=NOW, keep=0))
    written = b["status"]["folded"]["basicDelta"]
    assert Decimal(written) == Decimal("1.000000000000000000000000003e-40")
    _valid_on_the_api_server(b)


@settings(max_examples=300, deadline=None)
@given(
    st.from_regex(r"\A(0|[1-9][0-9]{0,12})(\.[0-9]{1,15})?[eE]-[0-9]{1,3}\Z", fullmatch=True)
)
def test_every_delta_the_api_accepts_is_stored_exactly_in_the_field(delta: str) -> None:
    from pydantic import TypeAdapter, ValidationError

    from ppml_operator.api.v1alpha1.budget import BudgetDelta
    from ppml_operator.api.v1alpha1.common import DECIMAL_MAX_LENGTH
    from ppml_operator.privacy.decimals import format_fitting

    try:
        TypeAdapter(BudgetDelta).validate_python(delta)
    except ValidationError:
        return  # the API refuses it at kubectl apply; nothing reaches the ledger
    stored = format_fitting(Decimal(delta), DECIMAL_MAX_LENGTH)
    assert Decimal(stored) == Decimal(delta)
    TypeAdapter(BudgetDelta).validate_python(stored)
