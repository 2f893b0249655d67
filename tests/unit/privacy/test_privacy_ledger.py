"""Incremental composition: ledgers of charges under RDP, PLD and Basic composition."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ppml_operator.privacy import (
    RDP_ORDERS,
    DpSgdEvent,
    GaussianEvent,
    InvalidPrivacyParameterError,
    LedgerAccount,
    RdpCurve,
    epsilon_of,
)
from ppml_operator.privacy.accountant import epsilon_float
from ppml_operator.privacy.decimals import round_up

DELTA = Decimal("1e-5")
JOB = DpSgdEvent(Decimal("1.1"), Decimal("0.01"), 300)
CHEAP = GaussianEvent(Decimal("8"))


def test_rdp_ledger_of_k_identical_charges_equals_the_self_composed_event() -> None:
    ledger = LedgerAccount("RDP", DELTA)
    for _ in range(6):
        ledger.add([JOB])
    together = epsilon_of([DpSgdEvent(JOB.noise_multiplier, JOB.sample_rate, 1800)], DELTA)
    assert ledger.spent_epsilon() == together
    assert ledger.spent_delta() == DELTA


def test_would_fit_matches_adding_and_leaves_the_ledger_unchanged() -> None:
    ledger = LedgerAccount("RDP", DELTA)
    ledger.add([JOB], key="first")
    before = ledger.spent_epsilon()
    fit = ledger.would_fit([JOB], Decimal(10))
    assert ledger.spent_epsilon() == before
    assert len(ledger) == 1
    ledger.add([JOB], key="second")
    assert fit.epsilon_after == ledger.spent_epsilon()
    assert fit.fits is True
    assert fit.remaining_after == Decimal(10) - fit.epsilon_after


def test_composition_beats_summation_and_stays_above_one_charge() -> None:
    ledger = LedgerAccount("RDP", DELTA)
    for _ in range(4):
        ledger.add(JOB)
    one = epsilon_of([JOB], DELTA)
    assert one < ledger.spent_epsilon() < 4 * one


def test_a_charge_that_does_not_fit_says_so_and_remaining_is_never_negative() -> None:
    ledger = LedgerAccount("RDP", DELTA)
    ledger.add([JOB])
    fit = ledger.would_fit([JOB], ledger.spent_epsilon())
    assert fit.fits is False
    assert fit.epsilon_after > ledger.spent_epsilon()
    assert fit.remaining_after == 0


def test_removing_a_charge_restores_exactly_the_ledger_without_it() -> None:
    ledger = LedgerAccount("RDP", DELTA)
    ledger.add([JOB], key="a")
    alone = ledger.spent_epsilon()
    ledger.add([CHEAP], key="b")
    assert ledger.spent_epsilon() > alone
    ledger.remove("b")
    assert ledger.spent_epsilon() == alone
    assert ledger.keys() == ["a"]


def test_keys_are_unique_and_unknown_keys_are_refused() -> None:
    ledger = LedgerAccount("RDP", DELTA)
    ledger.add([CHEAP], key="job-uid")
    with pytest.raises(InvalidPrivacyParameterError, match="job-uid"):
        ledger.add([CHEAP], key="job-uid")
    with pytest.raises(InvalidPrivacyParameterError, match="nobody"):
        ledger.remove("nobody")


def test_pld_ledger_composes_like_the_pld_accountant_and_below_rdp() -> None:
    events = [GaussianEvent(Decimal(4)), DpSgdEvent(Decimal(3), Decimal("0.05"), 50)]
    ledger = LedgerAccount("PLD", DELTA)
    for event in events:
        ledger.add([event])
    assert ledger.spent_epsilon() == epsilon_of(events, DELTA, "PLD")
    assert ledger.spent_epsilon() <= epsilon_of(events, DELTA, "RDP")
    assert ledger.would_fit([CHEAP], 100).epsilon_after == epsilon_of(
        [*events, CHEAP], DELTA, "PLD"
    )
    ledger.remove(ledger.keys()[0])
    assert ledger.spent_epsilon() == epsilon_of(events[1:], DELTA, "PLD")


def test_basic_composition_sums_standalone_epsilons_and_deltas() -> None:
    ledger = LedgerAccount("Basic", DELTA)
    ledger.add([JOB], delta=Decimal("2e-6"))
    ledger.add([CHEAP], delta=Decimal("3e-6"))
    expected = epsilon_of([JOB], Decimal("2e-6")) + epsilon_of([CHEAP], Decimal("3e-6"))
    assert ledger.spent_epsilon() == round_up(expected)
    assert ledger.spent_epsilon() >= expected
    assert ledger.spent_delta() == Decimal("5e-6")


def test_basic_composition_refuses_a_charge_whose_delta_would_overflow_the_budget() -> None:
    ledger = LedgerAccount("Basic", DELTA)
    ledger.add([CHEAP])  # at the budget's own delta: the whole delta is spent
    fit = ledger.would_fit([CHEAP], Decimal(1000))
    assert fit.fits is False
    assert fit.delta_after == 2 * DELTA
    small = LedgerAccount("Basic", DELTA)
    small.add([CHEAP], delta=DELTA / 2)
    assert small.would_fit([CHEAP], Decimal(1000), delta=DELTA / 2).fits is True


def test_rdp_curve_round_trips_through_its_stored_form_exactly() -> None:
    curve = RdpCurve.from_events([JOB, CHEAP])
    again = RdpCurve.from_list(curve.to_list())
    assert again == curve
    assert again.epsilon(DELTA) == epsilon_of([JOB, CHEAP], DELTA)
    assert curve.epsilon_float(DELTA) == epsilon_float([JOB, CHEAP], DELTA)
    assert (curve + RdpCurve.zero()) == curve
    assert RdpCurve.from_event(JOB).scaled(3).epsilon(DELTA) == epsilon_of([JOB] * 3, DELTA)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        (["0.1"] * 3, "156 values"),
        (["-1"] * len(RDP_ORDERS), "non-negative"),
        (["x"] * len(RDP_ORDERS), "'x'"),
    ],
    ids=["wrong length", "negative value", "not a number"],
)
def test_a_malformed_stored_curve_is_refused(values: list[str], named: str) -> None:
    with pytest.raises(InvalidPrivacyParameterError, match=named):
        RdpCurve.from_list(values)


def test_an_unknown_composition_is_refused() -> None:
    with pytest.raises(InvalidPrivacyParameterError, match="Summation"):
        LedgerAccount("Summation", DELTA)


def test_a_bare_epsilon_composes_under_basic_only() -> None:
    ledger = LedgerAccount("Basic", DELTA)
    ledger.add_basic(Decimal("1.5"), DELTA / 4, key="folded")
    ledger.add([CHEAP], delta=DELTA / 4)
    assert ledger.spent_epsilon() == round_up(Decimal("1.5") + epsilon_of([CHEAP], DELTA / 4))
    assert ledger.spent_delta() == DELTA / 2
    with pytest.raises(InvalidPrivacyParameterError, match="RDP composition"):
        LedgerAccount("RDP", DELTA).add_basic(Decimal(1), DELTA)
