"""Decimal strings for epsilon and delta, and conservative rounding.

The API carries privacy parameters as decimal strings and never as floats. This module parses
them once into exact :class:`~decimal.Decimal` values and formats results back, always rounding
in the direction that protects the data: a cost rounds **up**, a remaining budget rounds
**down** (and never below zero). Results keep :data:`SIGNIFICANT_DIGITS` significant digits.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, InvalidOperation

from ppml_operator.privacy.errors import InvalidPrivacyParameterError

SIGNIFICANT_DIGITS = 6
"""Significant digits kept by every epsilon this library returns (``7.32912``)."""

FLOAT_RELATIVE_MARGIN = 1e-9
"""Relative margin added to an accountant's float result before it is rounded up.

The accountants compute in binary floating point; their relative error is far below 1e-9 for
the values we handle, so adding this margin before rounding up guarantees that the decimal we
report is at least the exact value, not merely at least the float.
"""

_UP = Context(prec=SIGNIFICANT_DIGITS, rounding=ROUND_CEILING)
_DOWN = Context(prec=SIGNIFICANT_DIGITS, rounding=ROUND_FLOOR)

INFINITE = Decimal("Infinity")
"""The epsilon of a mechanism with no finite guarantee at the requested delta."""


def to_decimal(value: object, name: str) -> Decimal:
    """Convert ``value`` exactly into a finite :class:`~decimal.Decimal`.

    Parameters
    ----------
    value
        A :class:`~decimal.Decimal`, an ``int`` or a decimal string. A ``float`` is accepted
        through its shortest ``repr`` (``0.1`` becomes ``Decimal("0.1")``).
    name
        The parameter's name, used in the error message.

    Returns
    -------
    Decimal
        The exact value.

    Raises
    ------
    InvalidPrivacyParameterError
        If ``value`` is not a finite number.

    """
    if isinstance(value, bool):
        raise InvalidPrivacyParameterError(f"{name} {value!r} is not a decimal number.")
    try:
        if isinstance(value, Decimal):
            result = value
        elif isinstance(value, int):
            result = Decimal(value)
        elif isinstance(value, float):
            result = Decimal(repr(value))
        elif isinstance(value, str):
            result = Decimal(value.strip())
        else:
            raise InvalidPrivacyParameterError(f"{name} {value!r} is not a decimal number.")
    except InvalidOperation as err:
        raise InvalidPrivacyParameterError(
            f"{name} {value!r} is not a decimal number, such as '1.5'."
        ) from err
    if not result.is_finite():
        raise InvalidPrivacyParameterError(f"{name} {value!r} must be a finite decimal number.")
    return result


def parse_epsilon(text: str | Decimal) -> Decimal:
    """Parse an epsilon given as a decimal string.

    Parameters
    ----------
    text
        A positive decimal such as ``"1.5"`` or ``"10"``.

    Returns
    -------
    Decimal
        The exact value.

    Raises
    ------
    InvalidPrivacyParameterError
        If ``text`` is not a finite decimal greater than zero.

    """
    value = to_decimal(text, "epsilon")
    if value <= 0:
        raise InvalidPrivacyParameterError(
            f"epsilon {str(text)!r} must be greater than 0, such as '1.5'."
        )
    return value


def parse_delta(text: str | Decimal) -> Decimal:
    """Parse a delta given as a decimal string.

    Parameters
    ----------
    text
        A decimal strictly between 0 and 1, such as ``"1e-5"`` or ``"0.00001"``.

    Returns
    -------
    Decimal
        The exact value.

    Raises
    ------
    InvalidPrivacyParameterError
        If ``text`` is not a finite decimal in the open interval (0, 1).

    """
    value = to_decimal(text, "delta")
    if not 0 < value < 1:
        raise InvalidPrivacyParameterError(
            f"delta {str(text)!r} must be greater than 0 and less than 1, such as '1e-5'."
        )
    return value


def round_up(value: Decimal) -> Decimal:
    """Round ``value`` up (towards +inf) to :data:`SIGNIFICANT_DIGITS` significant digits."""
    if not value.is_finite():
        return value
    return _UP.plus(value)


def round_down(value: Decimal) -> Decimal:
    """Round ``value`` down (towards -inf) to :data:`SIGNIFICANT_DIGITS` significant digits."""
    if not value.is_finite():
        return value
    return _DOWN.plus(value)


def epsilon_from_float(value: float) -> Decimal:
    """Turn an accountant's float epsilon into a conservative decimal.

    Adds :data:`FLOAT_RELATIVE_MARGIN`, then rounds up to :data:`SIGNIFICANT_DIGITS`
    significant digits. ``inf`` and ``nan`` (no finite guarantee) become ``Infinity``.
    """
    if math.isnan(value) or math.isinf(value):
        return INFINITE
    if value <= 0:
        return Decimal(0)
    return round_up(Decimal(value) * (1 + Decimal(FLOAT_RELATIVE_MARGIN)))


def _plain(value: Decimal) -> str:
    if value.is_infinite():
        return "Infinity"
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def format_decimal(value: Decimal) -> str:
    """Format ``value`` exactly, in plain notation (``Decimal("1E-5")`` becomes ``"0.00001"``)."""
    return _plain(value)


def format_fitting(value: Decimal, max_length: int) -> str:
    """Format ``value`` exactly in at most ``max_length`` characters, plain notation first.

    The plain form (:func:`format_decimal`) is kept whenever it fits, so ordinary values read
    as before (``"0.00001"``). A value whose plain form is too long, such as a delta of
    ``1e-31`` (33 characters plain), is written with an exponent instead: the shorter of
    ``1.5E-31`` and ``15E-32``. Every form matches the API's decimal pattern and parses back
    to exactly ``value``.

    Parameters
    ----------
    value
        A finite, non-negative decimal.
    max_length
        The longest string the destination field accepts.

    Returns
    -------
    str
        The exact value in at most ``max_length`` characters.

    Raises
    ------
    InvalidPrivacyParameterError
        If no exact form fits (only for values more precise than any API field admits).

    """
    plain = _plain(value)
    if len(plain) <= max_length:
        return plain
    sign, digits, exponent = value.normalize().as_tuple()
    if sign or not isinstance(exponent, int):
        raise InvalidPrivacyParameterError(f"{value} is not a finite, non-negative decimal.")
    coefficient = "".join(map(str, digits))
    scientific = f"{coefficient[0]}.{coefficient[1:]}" if len(coefficient) > 1 else coefficient
    forms = [
        f"{coefficient}E{exponent}",
        f"{scientific}E{exponent + len(coefficient) - 1}",
    ]
    best = min(forms, key=len)
    if len(best) > max_length:
        raise InvalidPrivacyParameterError(
            f"{plain} has no exact form of at most {max_length} characters."
        )
    return best


def format_cost(value: Decimal) -> str:
    """Format a privacy cost, rounding up to :data:`SIGNIFICANT_DIGITS` significant digits.

    Parameters
    ----------
    value
        A non-negative epsilon or delta; ``Infinity`` is formatted as ``"Infinity"``.

    Returns
    -------
    str
        A plain decimal string without exponent, e.g. ``"7.32912"`` or ``"0.00001"``.

    """
    return _plain(round_up(value))


def format_remaining(value: Decimal) -> str:
    """Format a remaining budget, rounding down and never below zero.

    Parameters
    ----------
    value
        The remaining epsilon (may be negative when a budget is overspent).

    Returns
    -------
    str
        A plain decimal string without exponent; ``"0"`` when ``value`` is at most zero.

    """
    if value <= 0:
        return "0"
    return _plain(round_down(value))


def remaining(budget: Decimal, spent: Decimal) -> Decimal:
    """Return ``budget - spent`` rounded down, never below zero."""
    if not spent.is_finite():
        return Decimal(0)
    left = budget - spent
    if left <= 0:
        return Decimal(0)
    return round_down(left)
