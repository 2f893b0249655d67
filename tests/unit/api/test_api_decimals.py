"""Decimal strings: the pattern, the parser and the bounds agree for any input."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppml_operator.api.v1alpha1.common import DECIMAL_PATTERN, DecimalBounds, parse_decimal

NUMBERS = st.one_of(
    st.decimals(min_value=0, max_value=10**6, allow_nan=False, allow_infinity=False).map(str),
    st.from_regex(r"\A(0|[1-9][0-9]{0,4})(\.[0-9]{1,8})?([eE][-+]?[0-9]{1,3})?\Z"),
    st.text(max_size=12),
)


@given(NUMBERS)
def test_the_parser_accepts_exactly_what_the_pattern_does(text):
    matches = re.match(DECIMAL_PATTERN, text) is not None
    try:
        value = parse_decimal(text)
    except ValueError:
        assert not matches
    else:
        assert matches and value == Decimal(text)


BOUNDS = DecimalBounds("delta", gt="0", lt="1")


@given(NUMBERS)
def test_bounds_hold_exactly_when_the_float_lies_inside(text):
    if re.match(DECIMAL_PATTERN, text) is None:
        return
    inside = 0.0 < float(text) < 1.0
    try:
        BOUNDS.check(text)
    except ValueError as err:
        assert not inside
        assert "delta must be greater than 0 and less than 1" in str(err)
    else:
        assert inside


@pytest.mark.parametrize(
    ("bounds", "rule", "message"),
    [
        pytest.param(
            DecimalBounds("epsilon", gt="0", le="1000"),
            "double(self) > 0.0 && double(self) <= 1000.0",
            "epsilon must be greater than 0 and at most 1000",
            id="open below, closed above",
        ),
        pytest.param(
            DecimalBounds("momentum", ge="0", lt="1"),
            "double(self) >= 0.0 && double(self) < 1.0",
            "momentum must be at least 0 and less than 1",
            id="closed below, open above",
        ),
    ],
)
def test_the_cel_rule_and_message(bounds, rule, message):
    assert (bounds.rule, bounds.message) == (rule, message)
