"""Decimal parsing and conservative rounding: costs round up, what remains rounds down."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml_operator.privacy import (
    SIGNIFICANT_DIGITS,
    InvalidPrivacyParameterError,
    format_cost,
    format_remaining,
    parse_delta,
    parse_epsilon,
)
from ppml_operator.privacy.decimals import epsilon_from_float, remaining, round_down, round_up

PARSED = {
    "plain epsilon": (parse_epsilon, "1.5", Decimal("1.5")),
    "integer epsilon": (parse_epsilon, "10", Decimal(10)),
    "exponent delta": (parse_delta, "1e-5", Decimal("0.00001")),
    "plain delta": (parse_delta, "0.00001", Decimal("1e-5")),
    "spaces around": (parse_delta, " 1E-6 ", Decimal("1e-6")),
}


@pytest.mark.parametrize(("parse", "text", "value"), PARSED.values(), ids=PARSED.keys())
def test_decimal_strings_parse_exactly(parse: object, text: str, value: Decimal) -> None:
    assert parse(text) == value  # type: ignore[operator]


REFUSED = {
    "epsilon zero": (parse_epsilon, "0", "epsilon '0'"),
    "epsilon negative": (parse_epsilon, "-1", "epsilon '-1'"),
    "epsilon text": (parse_epsilon, "ten", "epsilon 'ten'"),
    "epsilon infinite": (parse_epsilon, "Infinity", "epsilon 'Infinity'"),
    "delta zero": (parse_delta, "0", "delta '0'"),
    "delta one": (parse_delta, "1", "delta '1'"),
    "delta nan": (parse_delta, "NaN", "delta 'NaN'"),
    "delta empty": (parse_delta, "", "delta ''"),
}


@pytest.mark.parametrize(("parse", "text", "named"), REFUSED.values(), ids=REFUSED.keys())
def test_bad_decimal_strings_are_refused_with_a_sentence_naming_them(
    parse: object, text: str, named: str
) -> None:
    with pytest.raises(InvalidPrivacyParameterError) as caught:
        parse(text)  # type: ignore[operator]
    message = str(caught.value)
    assert named in message
    assert message.endswith(".")


FORMATTED = {
    "cost rounds up": (format_cost, Decimal("7.329111171"), "7.32912"),
    "exact cost stays": (format_cost, Decimal("2.5"), "2.5"),
    "small cost, plain notation": (format_cost, Decimal("1e-5"), "0.00001"),
    "integer cost": (format_cost, Decimal("1E+1"), "10"),
    "no finite cost": (format_cost, Decimal("Infinity"), "Infinity"),
    "remaining rounds down": (format_remaining, Decimal("2.6708888829"), "2.67088"),
    "overspent remaining is zero": (format_remaining, Decimal("-0.3"), "0"),
    "nothing remaining": (format_remaining, Decimal("0"), "0"),
}


@pytest.mark.parametrize(("fmt", "value", "text"), FORMATTED.values(), ids=FORMATTED.keys())
def test_formatting_rounds_in_the_safe_direction(fmt: object, value: Decimal, text: str) -> None:
    assert fmt(value) == text  # type: ignore[operator]


decimals = st.decimals(
    min_value=Decimal("1e-12"), max_value=Decimal("1e6"), allow_nan=False, allow_infinity=False
)


@settings(max_examples=200, database=None)
@given(decimals)
def test_costs_never_round_below_and_remaining_never_above(value: Decimal) -> None:
    up, down = round_up(value), round_down(value)
    assert down <= value <= up
    assert len(up.normalize().as_tuple().digits) <= SIGNIFICANT_DIGITS
    assert Decimal(format_cost(value)) >= value
    assert Decimal(format_remaining(value)) <= value


@settings(max_examples=200, database=None)
@given(decimals, decimals)
def test_remaining_budget_never_exceeds_the_true_difference(
    budget: Decimal, spent: Decimal
) -> None:
    left = remaining(budget, spent)
    assert left >= 0
    assert left <= max(budget - spent, Decimal(0))


@settings(max_examples=200, database=None)
@given(st.floats(min_value=1e-300, max_value=1e300))
def test_an_accountant_float_becomes_a_decimal_at_least_as_large(value: float) -> None:
    assert epsilon_from_float(value) >= Decimal(value)


def test_an_infinite_or_undefined_epsilon_stays_infinite() -> None:
    assert epsilon_from_float(float("inf")) == Decimal("Infinity")
    assert epsilon_from_float(float("nan")) == Decimal("Infinity")
