"""Calibration: the smallest noise multiplier whose epsilon does not exceed a target.

Opacus' ``get_noise_multiplier`` stops within a tolerance of the target and can return a noise
multiplier whose epsilon is slightly *above* it. Here the answer lies on a fixed decimal grid
(:data:`NOISE_SIGNIFICANT_DIGITS` significant digits) and its epsilon, computed by the same
accountant and rounded up exactly as :func:`~ppml_operator.privacy.accountant.epsilon_of` rounds
it, is checked against the target before it is returned: it never overshoots.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from ppml_operator.privacy.accountant import Accountant, epsilon_of
from ppml_operator.privacy.decimals import (
    format_cost,
    format_decimal,
    parse_delta,
    parse_epsilon,
    to_decimal,
)
from ppml_operator.privacy.errors import CalibrationError, InvalidPrivacyParameterError
from ppml_operator.privacy.events import DpSgdEvent, PrivacyEvent

NOISE_SIGNIFICANT_DIGITS: Final = 4
"""Significant digits of a calibrated noise multiplier (``1.137``, ``0.8125``, ``12.34``)."""

MIN_NOISE_MULTIPLIER: Final = Decimal("0.01")
"""The smallest noise multiplier calibration returns."""

MAX_NOISE_MULTIPLIER: Final = Decimal("1000")
"""The largest noise multiplier calibration tries before giving up."""

_PER_DECADE: Final = 9 * 10 ** (NOISE_SIGNIFICANT_DIGITS - 1)
_MIN_EXPONENT: Final = MIN_NOISE_MULTIPLIER.adjusted()


@dataclass(frozen=True)
class Calibration:
    """The result of :func:`calibrate_noise_multiplier`.

    Attributes
    ----------
    noise_multiplier
        The smallest noise multiplier on the grid whose epsilon is at most the target.
    epsilon
        The epsilon it spends (rounded up; at most the target).

    """

    noise_multiplier: Decimal
    epsilon: Decimal


def _grid_value(index: int) -> Decimal:
    decade, offset = divmod(index, _PER_DECADE)
    mantissa = 10 ** (NOISE_SIGNIFICANT_DIGITS - 1) + offset
    exponent = decade + _MIN_EXPONENT - (NOISE_SIGNIFICANT_DIGITS - 1)
    value = Decimal(mantissa).scaleb(exponent).normalize()
    # normalize() writes 1000 as 1E+3; keep integers in plain notation.
    return value.quantize(Decimal(1)) if value.as_tuple().exponent > 0 else value  # type: ignore[operator]


def _grid_index(value: float) -> int:
    """Return the index of the smallest grid value >= ``value`` (clamped to the grid)."""
    low, high = 0, _grid_index_max()
    while low < high:
        middle = (low + high) // 2
        if float(_grid_value(middle)) >= value:
            high = middle
        else:
            low = middle + 1
    return low


def _grid_index_max() -> int:
    decades = MAX_NOISE_MULTIPLIER.adjusted() - _MIN_EXPONENT
    return decades * _PER_DECADE


def calibrate_noise_multiplier(
    target_epsilon: Decimal | str,
    sample_rate: Decimal | str,
    steps: int,
    delta: Decimal | str,
    accountant: Accountant | str = Accountant.RDP,
    *,
    event: Callable[[Decimal], PrivacyEvent] | None = None,
) -> Calibration:
    """Find the smallest noise multiplier whose DP-SGD epsilon is at most ``target_epsilon``.

    Parameters
    ----------
    target_epsilon
        The epsilon not to exceed (> 0).
    sample_rate
        Poisson sampling rate (expected batch / records, or clients per round / clients).
    steps
        Number of steps (or rounds).
    delta
        The delta at which epsilon is computed.
    accountant
        :attr:`Accountant.RDP` (default) or :attr:`Accountant.PLD`.
    event
        The mechanism at a given noise multiplier, when it is not DP-SGD with
        ``sample_rate`` and ``steps`` (e.g. fixed-size client sampling); ``sample_rate`` and
        ``steps`` then only word the error.

    Returns
    -------
    Calibration
        The noise multiplier (on a grid of :data:`NOISE_SIGNIFICANT_DIGITS` significant digits,
        at least :data:`MIN_NOISE_MULTIPLIER`) and the epsilon it spends, which is at most
        ``target_epsilon``.

    Raises
    ------
    InvalidPrivacyParameterError
        If a parameter is malformed or out of range.
    CalibrationError
        If even :data:`MAX_NOISE_MULTIPLIER` spends more than ``target_epsilon``.

    """
    target = parse_epsilon(target_epsilon)
    rate = to_decimal(sample_rate, "sampleRate")
    delta = parse_delta(delta)
    accountant = Accountant.parse(accountant)
    DpSgdEvent(Decimal(1), rate, steps)  # validates the rate and the steps
    make = event if event is not None else (lambda z: DpSgdEvent(z, rate, steps))
    cache: dict[int, Decimal] = {}

    def cost(index: int) -> Decimal:
        if index not in cache:
            cache[index] = epsilon_of([make(_grid_value(index))], delta, accountant)
        return cache[index]

    top = _grid_index_max()
    factor = 2.0
    if accountant is Accountant.PLD:
        # PLD is at most RDP (pinned by the tests), so the RDP answer is feasible for PLD and
        # close to the PLD answer: start there and step down gently (small noise makes large,
        # slow PLDs).
        try:
            rdp = calibrate_noise_multiplier(target, rate, steps, delta, event=event)
            guess = _grid_index(float(rdp.noise_multiplier))
        except CalibrationError:
            guess = top
        factor = 1.25
    else:
        guess = _grid_index(1.0)
    # Bracket: low is infeasible (or -1), high is feasible (or -1).
    low, high = -1, -1
    index = guess
    while True:
        if cost(index) <= target:
            high = index
            if index == 0 or low >= 0:
                break
            index = min(index - 1, _grid_index(float(_grid_value(index)) / factor))
        else:
            low = index
            if index == top or high >= 0:
                break
            index = max(index + 1, min(top, _grid_index(float(_grid_value(index)) * factor)))
    if high < 0:
        raise CalibrationError(
            f"target epsilon {format_decimal(target)} cannot be met at delta "
            f"{format_decimal(delta)} with sample rate {format_decimal(rate)} "
            f"and {steps} steps: even noise multiplier {MAX_NOISE_MULTIPLIER} spends epsilon "
            f"{format_cost(cost(top))}."
        )
    # Refine: secant steps through the two latest points (log-log), kept inside the bracket,
    # with a bisection whenever the bracket fails to halve, and a probe of the neighbour on
    # the other side once epsilon is within 1% of the target.
    recent = list(cache)[-2:]
    stalled = 0
    while low >= 0 and high - low > 1:
        before = high - low
        if stalled >= 2 or len(recent) < 2:
            middle = (low + high) // 2
        else:
            middle = _secant(recent[-2], recent[-1], cost, target, low, high)
        value = cost(middle)
        recent = [*recent[-1:], middle]
        if value <= target:
            high = middle
            neighbour = middle - 1
        else:
            low = middle
            neighbour = middle + 1
        close = value.is_finite() and abs(float(value) / float(target) - 1) < 0.01
        if close and low < neighbour < high:
            if cost(neighbour) <= target:
                high = neighbour
            else:
                low = neighbour
        stalled = stalled + 1 if (high - low) * 2 > before else 0
    if cost(high) > target:  # pragma: no cover - the invariant above guarantees it
        raise CalibrationError(
            f"calibration to epsilon {format_decimal(target)} failed its final check."
        )
    return Calibration(noise_multiplier=_grid_value(high), epsilon=cost(high))


def _secant(
    first: int,
    second: int,
    cost: Callable[[int], Decimal],
    target: Decimal,
    low: int,
    high: int,
) -> int:
    """Guess the grid index where epsilon crosses ``target`` from two points, log-log."""
    e1, e2 = cost(first), cost(second)
    middle = (low + high) // 2
    if first == second or not (e1.is_finite() and e2.is_finite()) or e1 <= 0 or e2 <= 0:
        return middle
    log_s1 = math.log(float(_grid_value(first)))
    log_s2 = math.log(float(_grid_value(second)))
    log_e1, log_e2 = math.log(float(e1)), math.log(float(e2))
    if log_e1 == log_e2:
        return middle
    fraction = (log_e1 - math.log(float(target))) / (log_e1 - log_e2)
    guess = _grid_index(math.exp(log_s1 + fraction * (log_s2 - log_s1)))
    return max(low + 1, min(high - 1, guess))


__all__ = [
    "MAX_NOISE_MULTIPLIER",
    "MIN_NOISE_MULTIPLIER",
    "NOISE_SIGNIFICANT_DIGITS",
    "Calibration",
    "InvalidPrivacyParameterError",
    "calibrate_noise_multiplier",
]
