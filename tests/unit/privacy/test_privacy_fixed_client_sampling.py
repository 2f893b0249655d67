"""Central DP charged as Flower runs it: fixed-size client sampling without replacement.

Reference values are computed here independently of the operator's translation
(``ppml_operator.privacy._dp``): directly with dp_accounting's ``RdpAccountant`` under the
replace-one relation, by hand from the Gaussian mechanism's RDP curve, and against the exact
privacy profile of the Gaussian mechanism (a lower bound no sound charge may go under).
"""

from __future__ import annotations

import math
from decimal import Decimal

import dp_accounting
import pytest
from dp_accounting.rdp import RdpAccountant
from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

from ppml_operator.privacy import (
    EVENT_SCHEMA,
    ClientLevelDpEvent,
    FixedClientSamplingDpEvent,
    GaussianEvent,
    InvalidPrivacyParameterError,
    calibrate_noise_multiplier,
    epsilon_of,
    event_from_dict,
    event_to_dict,
)
from ppml_operator.privacy.accountant import epsilon_float
from ppml_operator.privacy.rdp import RDP_ORDERS
from ppml_operator.reconcile.ledger import merge_events

DELTA = Decimal("1e-5")


def _rdp(event: dp_accounting.DpEvent) -> RdpAccountant:
    accountant = RdpAccountant(
        orders=list(RDP_ORDERS),
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE,
    )
    return accountant.compose(event)


def direct(z: float, clients: int, per_round: int, rounds: int) -> float:
    """Epsilon from dp_accounting alone, on the same orders.

    The Gaussian's noise multiplier is z / 2: Flower adds noise of std z * C to the sum, and
    replacing one client's clipped update moves the sum by up to 2 C. Per order, the smaller
    of the without-replacement bound and the bound without sampling (both valid).
    """
    gaussian = dp_accounting.GaussianDpEvent(z / 2)
    sampled = _rdp(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.SampledWithoutReplacementDpEvent(
                source_dataset_size=clients, sample_size=per_round, event=gaussian
            ),
            rounds,
        )
    )
    everyone = _rdp(dp_accounting.SelfComposedDpEvent(gaussian, rounds))
    rdp = [min(a, b) for a, b in zip(sampled._rdp, everyone._rdp, strict=True)]
    eps, _ = compute_epsilon(RDP_ORDERS, rdp, float(DELTA))
    return float(eps)


CASES = {
    "half the clients each round": (Decimal("1.0"), 10, 5, 20),
    "3 of 3 clinics every round": (Decimal("2.0"), 3, 3, 10),
    "one of many clients": (Decimal("1.5"), 100, 1, 50),
    "large noise, many rounds": (Decimal("8"), 20, 10, 200),
    "2 of 3 clinics (the bound without sampling wins at some orders)": (Decimal("3"), 3, 2, 10),
}


@pytest.mark.parametrize(("z", "n", "m", "rounds"), CASES.values(), ids=CASES.keys())
def test_the_charge_is_dp_accountings_replace_one_subsampled_gaussian(
    z: Decimal, n: int, m: int, rounds: int
) -> None:
    event = FixedClientSamplingDpEvent(z, n, m, rounds)
    reference = direct(float(z), n, m, rounds)
    assert epsilon_float([event], DELTA) == pytest.approx(reference, rel=1e-12)
    # epsilon_of rounds up, never down.
    assert float(epsilon_of([event], DELTA)) >= reference


def test_a_hand_derived_value_when_everyone_takes_part_in_every_round() -> None:
    # z = 2, 3 of 3 clients, 10 rounds: no sampling, so 10 Gaussian releases of std 2C on a
    # sum of sensitivity 2C (replace-one): RDP(a) = 10 * a * (2/2)^2 / 2 = 5a. The conversion
    # (Canonne-Kamath-Steinke, dp_accounting's) eps = min_a 5a + ln(1 - 1/a) - ln(delta a)/(a-1)
    # on the fixed grid is attained at a = 2.5:
    # 12.5 + ln(0.6) + ln(40000) / 1.5 = 12.5 - 0.5108 + 7.0644 = 19.0536 (6 digits, up).
    hand = 12.5 + math.log(0.6) + math.log(40000) / 1.5
    assert hand == pytest.approx(19.05359753, abs=1e-8)
    assert epsilon_of([FixedClientSamplingDpEvent(Decimal(2), 3, 3, 10)], DELTA) == Decimal(
        "19.0536"
    )


def test_the_hand_value_upper_bounds_the_exact_gaussian_profile() -> None:
    # 10 Gaussians with std/sensitivity 1 are exactly mu-GDP with mu = sqrt(10): its exact
    # delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2) is at most delta at the
    # charged epsilon (a sound charge is never below the truth).
    mu = math.sqrt(10)
    eps = float(epsilon_of([FixedClientSamplingDpEvent(Decimal(2), 3, 3, 10)], DELTA))

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2))

    exact_delta = phi(-eps / mu + mu / 2) - math.exp(eps) * phi(-eps / mu - mu / 2)
    assert exact_delta <= float(DELTA)


def test_everyone_every_round_is_no_subsampling_at_all() -> None:
    # The same as rounds Gaussian releases at noise z / 2 (sensitivity 2C).
    event = FixedClientSamplingDpEvent(Decimal("3"), 4, 4, 7)
    assert epsilon_of([event], DELTA) == epsilon_of([GaussianEvent(Decimal("1.5"), 7)], DELTA)


def test_a_pinned_subsampled_value() -> None:
    # dp_accounting 0.6.0, RdpAccountant(REPLACE_ONE) on the default orders:
    # SelfComposed(SampledWithoutReplacement(10, 5, Gaussian(0.5)), 20) -> 76.98321348...
    event = FixedClientSamplingDpEvent(Decimal("1.0"), 10, 5, 20)
    assert epsilon_of([event], DELTA) == Decimal("76.9833")


def test_sampling_fewer_clients_never_costs_more_than_taking_all() -> None:
    full = epsilon_of([FixedClientSamplingDpEvent(Decimal("2"), 10, 10, 30)], DELTA)
    for m in (1, 3, 5, 9):
        assert epsilon_of([FixedClientSamplingDpEvent(Decimal("2"), 10, m, 30)], DELTA) <= full


def test_the_honest_charge_is_above_the_old_poisson_figure() -> None:
    # The old event assumed Poisson sampling and add/remove-one with sensitivity C.
    old = epsilon_of([ClientLevelDpEvent(Decimal("1.0"), Decimal("0.5"), 20)], DELTA)
    new = epsilon_of([FixedClientSamplingDpEvent(Decimal("1.0"), 10, 5, 20)], DELTA)
    assert new > old


def test_pld_prices_it_with_rdp() -> None:
    # dp_accounting's PLD accountant does not take SampledWithoutReplacementDpEvent.
    event = FixedClientSamplingDpEvent(Decimal("1.0"), 10, 5, 20)
    assert epsilon_of([event], DELTA, "PLD") == epsilon_of([event], DELTA, "RDP")


def test_serialised_form_is_a_new_type_and_the_old_one_still_parses() -> None:
    event = FixedClientSamplingDpEvent(Decimal("1.1"), 10, 4, 30)
    assert event_to_dict(event) == {
        "schema": EVENT_SCHEMA,
        "type": "FixedClientSamplingDp",
        "noiseMultiplier": "1.1",
        "clients": 10,
        "clientsPerRound": 4,
        "rounds": 30,
    }
    assert event_from_dict(event_to_dict(event)) == event
    old = {"schema": EVENT_SCHEMA, "type": "ClientLevelDp", "noiseMultiplier": "0.8",
           "sampleRate": "0.5", "rounds": 20}
    assert event_from_dict(old) == ClientLevelDpEvent(Decimal("0.8"), Decimal("0.5"), 20)


def test_the_ledger_merges_its_rounds() -> None:
    one = event_to_dict(FixedClientSamplingDpEvent(Decimal("1.1"), 10, 4, 30))
    (merged,) = merge_events([one, one])
    assert merged == {**one, "rounds": 60}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param((Decimal(1), 3, 4, 5), "at most clients", id="more per round than clients"),
        pytest.param((Decimal(1), 3, 0, 5), "clientsPerRound", id="no client per round"),
        pytest.param((Decimal(0), 3, 2, 5), "noiseMultiplier", id="no noise"),
        pytest.param((Decimal(1), 3, 2, 0), "rounds", id="no rounds"),
    ],
)
def test_invalid_parameters_are_refused(args: tuple[Decimal, int, int, int], fragment: str) -> None:
    with pytest.raises(InvalidPrivacyParameterError, match=fragment):
        FixedClientSamplingDpEvent(*args)


def test_calibration_targets_the_fixed_size_event() -> None:
    def make(z: Decimal) -> FixedClientSamplingDpEvent:
        return FixedClientSamplingDpEvent(z, 10, 5, 20)

    found = calibrate_noise_multiplier(Decimal(8), Decimal("0.5"), 20, DELTA, event=make)
    assert found.epsilon <= 8
    assert epsilon_of([make(found.noise_multiplier)], DELTA) == found.epsilon
    lower = found.noise_multiplier - Decimal("0.001")
    assert epsilon_of([make(lower)], DELTA) > 8
