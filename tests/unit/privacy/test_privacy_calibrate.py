"""Calibration: the smallest noise multiplier on the grid whose epsilon is at most the target."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppml_operator.privacy import (
    CalibrationError,
    DpSgdEvent,
    InvalidPrivacyParameterError,
    calibrate_noise_multiplier,
    epsilon_of,
)
from ppml_operator.privacy.calibrate import MIN_NOISE_MULTIPLIER, _grid_index, _grid_value

DELTA = Decimal("1e-5")


def previous_on_grid(value: Decimal) -> Decimal:
    return _grid_value(_grid_index(float(value)) - 1)


@settings(
    max_examples=6, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    target=st.decimals(min_value=Decimal("0.3"), max_value=Decimal("20"), places=2),
    rate=st.sampled_from([Decimal("0.001"), Decimal("0.004"), Decimal("0.02"), Decimal("0.1")]),
    steps=st.integers(min_value=10, max_value=3000),
)
def test_calibration_never_overshoots_and_one_step_less_noise_would(
    target: Decimal, rate: Decimal, steps: int
) -> None:
    result = calibrate_noise_multiplier(target, rate, steps, DELTA)
    spent = epsilon_of([DpSgdEvent(result.noise_multiplier, rate, steps)], DELTA)
    assert result.epsilon == spent
    assert spent <= target
    if result.noise_multiplier > MIN_NOISE_MULTIPLIER:
        less = previous_on_grid(result.noise_multiplier)
        assert epsilon_of([DpSgdEvent(less, rate, steps)], DELTA) > target


def test_calibrated_noise_of_a_known_job() -> None:
    # 1,1 is the noise of the classic MNIST DP-SGD example; its epsilon is about 1 at these
    # parameters, so the calibrated noise for target 1 lies just above it.
    result = calibrate_noise_multiplier(Decimal(1), Decimal("0.004"), 2340, DELTA)
    assert Decimal("1.0") < result.noise_multiplier < Decimal("1.2")
    assert result.epsilon <= 1


def test_pld_calibration_needs_no_more_noise_than_rdp() -> None:
    # Full-batch steps keep the PLDs small (PLD calibration costs a second per evaluation at
    # low noise and subsampling).
    rdp = calibrate_noise_multiplier(Decimal(2), Decimal(1), 10, DELTA, "RDP")
    pld = calibrate_noise_multiplier(Decimal(2), Decimal(1), 10, DELTA, "PLD")
    assert pld.noise_multiplier <= rdp.noise_multiplier
    assert pld.epsilon <= 2
    assert epsilon_of([DpSgdEvent(pld.noise_multiplier, Decimal(1), 10)], DELTA, "PLD") <= 2
    less = previous_on_grid(pld.noise_multiplier)
    assert epsilon_of([DpSgdEvent(less, Decimal(1), 10)], DELTA, "PLD") > 2


def test_a_generous_target_gets_the_smallest_noise_offered() -> None:
    result = calibrate_noise_multiplier(Decimal(10000), Decimal("0.001"), 1, DELTA)
    assert result.noise_multiplier == MIN_NOISE_MULTIPLIER


def test_an_impossible_target_is_a_sentence_naming_it() -> None:
    with pytest.raises(CalibrationError, match=r"target epsilon 0\.000001 cannot be met") as err:
        calibrate_noise_multiplier(Decimal("1e-6"), Decimal(1), 3000, DELTA)
    assert str(err.value).endswith(".")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ((Decimal(0), Decimal("0.1"), 10, DELTA), "epsilon"),
        ((Decimal(1), Decimal("1.5"), 10, DELTA), "sampleRate"),
        ((Decimal(1), Decimal("0.1"), 0, DELTA), "steps"),
        ((Decimal(1), Decimal("0.1"), 10, Decimal(0)), "delta"),
    ],
    ids=["zero target", "rate above one", "no steps", "zero delta"],
)
def test_invalid_calibration_parameters_are_refused(args: tuple[object, ...], named: str) -> None:
    with pytest.raises(InvalidPrivacyParameterError, match=named):
        calibrate_noise_multiplier(*args)  # type: ignore[arg-type]


def test_grid_is_monotone_and_has_four_significant_digits() -> None:
    values = [_grid_value(i) for i in range(8990, 9010)]
    assert values == sorted(values)
    assert all(len(v.as_tuple().digits) <= 4 for v in values)
    assert _grid_value(_grid_index(1.0)) == 1
