"""Epsilon of a sequence of privacy events, with the RDP (default) or the PLD accountant."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from decimal import Decimal

from ppml_operator.privacy._dp import pld_of
from ppml_operator.privacy.decimals import epsilon_from_float, parse_delta
from ppml_operator.privacy.errors import InvalidPrivacyParameterError
from ppml_operator.privacy.events import PrivacyEvent
from ppml_operator.privacy.rdp import RdpCurve


class Accountant(enum.StrEnum):
    """The accountant that converts events into epsilon."""

    RDP = "RDP"
    """Rényi DP on :data:`~ppml_operator.privacy.rdp.RDP_ORDERS` (dp_accounting's RdpAccountant)."""
    PLD = "PLD"
    """Privacy-loss distributions (dp_accounting's PLDAccountant): tighter, slower."""

    @classmethod
    def parse(cls, text: str) -> Accountant:
        """Parse ``"RDP"`` or ``"PLD"`` (any case).

        Raises
        ------
        InvalidPrivacyParameterError
            If ``text`` names no accountant.

        """
        for member in cls:
            if member.value.lower() == str(text).lower():
                return member
        raise InvalidPrivacyParameterError(f"accountant {text!r} is unknown; expected RDP or PLD.")


def epsilon_float(
    events: Sequence[PrivacyEvent], delta: Decimal, accountant: Accountant = Accountant.RDP
) -> float:
    """Return the composed epsilon of ``events`` at ``delta`` as the accountant's float."""
    if accountant is Accountant.RDP:
        return RdpCurve.from_events(events).epsilon_float(delta)
    if not events:
        return 0.0
    composed = pld_of(events[0])
    for event in events[1:]:
        composed = composed.compose(pld_of(event))
    return float(composed.get_epsilon_for_delta(float(delta)))


def epsilon_of(
    events: Sequence[PrivacyEvent] | PrivacyEvent,
    delta: Decimal | str,
    accountant: Accountant | str = Accountant.RDP,
) -> Decimal:
    """Return the epsilon that ``events``, composed, spend at ``delta``.

    Parameters
    ----------
    events
        The events of one charge (or a single event).
    delta
        The delta of the (epsilon, delta) guarantee, in (0, 1).
    accountant
        :attr:`Accountant.RDP` (default) or :attr:`Accountant.PLD`.

    Returns
    -------
    Decimal
        Epsilon rounded **up** to
        :data:`~ppml_operator.privacy.decimals.SIGNIFICANT_DIGITS` significant digits;
        ``Decimal("Infinity")`` when no finite epsilon exists at this delta.

    Raises
    ------
    InvalidPrivacyParameterError
        If ``delta`` or ``accountant`` is invalid.

    """
    if not isinstance(events, Sequence):
        events = [events]
    delta = parse_delta(delta)
    accountant = Accountant.parse(accountant)
    return epsilon_from_float(epsilon_float(list(events), delta, accountant))
