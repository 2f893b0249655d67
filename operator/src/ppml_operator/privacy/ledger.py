"""Composition of many charges against one budget, incrementally.

A :class:`LedgerAccount` holds the charges made against one budget (one ``PrivacyBudget``'s
delta) and answers "would one more charge fit?" without recomposing the ledger:

* ``RDP``: the ledger keeps the sum of the charges' RDP curves; one more charge is one vector
  addition and one conversion, O(orders), whatever the length of the ledger.
* ``PLD``: the ledger keeps the composed privacy-loss distribution; one more charge is one
  composition (an FFT convolution whose size grows with the total privacy loss, not with the
  number of charges). Removing a charge recomposes the others (O(charges) compositions).
* ``Basic``: each charge ``c`` is an ``(epsilon_c, delta_c)`` guarantee on its own, where
  ``delta_c`` is the delta given with the charge (the budget's delta when none is given) and
  ``epsilon_c`` is the charge's epsilon at ``delta_c`` computed by the charge's accountant
  (RDP unless given). Basic composition spends ``(sum epsilon_c, sum delta_c)``; a charge fits
  only if both sums stay within the budget's epsilon and delta. This is the sound reading of
  "sum of epsilons and deltas": with every charge at the budget's own delta only one fits, so
  Basic budgets want jobs whose delta is a fraction of the budget's.

Under RDP and PLD every charge is accounted at the budget's delta; a job's own delta only
matters for the epsilon it reports standalone.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from ppml_operator.privacy._dp import pld_of
from ppml_operator.privacy.accountant import Accountant, epsilon_of
from ppml_operator.privacy.decimals import (
    epsilon_from_float,
    parse_delta,
    remaining,
    round_up,
    to_decimal,
)
from ppml_operator.privacy.errors import InvalidPrivacyParameterError
from ppml_operator.privacy.events import PrivacyEvent
from ppml_operator.privacy.rdp import RDP_ORDERS, RdpCurve


class Composition(enum.StrEnum):
    """How the charges against a budget compose."""

    RDP = "RDP"
    """RDP curves add up; the total converts to epsilon at the budget's delta (default)."""
    BASIC = "Basic"
    """Epsilons and deltas add up (basic composition): simple, loose."""
    PLD = "PLD"
    """Privacy-loss distributions compose by convolution: the tightest, the costliest."""

    @classmethod
    def parse(cls, text: str) -> Composition:
        """Parse ``"RDP"``, ``"Basic"`` or ``"PLD"`` (any case).

        Raises
        ------
        InvalidPrivacyParameterError
            If ``text`` names no composition.

        """
        for member in cls:
            if member.value.lower() == str(text).lower():
                return member
        raise InvalidPrivacyParameterError(
            f"composition {text!r} is unknown; expected RDP, Basic or PLD."
        )


@dataclass(frozen=True)
class Fit:
    """The answer of :meth:`LedgerAccount.would_fit`.

    Attributes
    ----------
    fits
        Whether the ledger plus the charge stays within the budget.
    epsilon_after
        The epsilon the ledger would spend with the charge (rounded up).
    remaining_after
        The budget's epsilon left after the charge (rounded down, never below zero).
    delta_after
        The delta spent with the charge: the sum of deltas for ``Basic``, the budget's delta
        otherwise.

    """

    fits: bool
    epsilon_after: Decimal
    remaining_after: Decimal
    delta_after: Decimal


@dataclass(frozen=True)
class _Charge:
    key: str
    events: tuple[PrivacyEvent, ...]
    delta: Decimal
    epsilon: Decimal  # standalone epsilon at ``delta`` (Basic)
    curve: np.ndarray[Any, np.dtype[np.float64]] | None  # RDP
    pld: Any  # dp_accounting PrivacyLossDistribution (PLD)


def _as_events(events: Sequence[PrivacyEvent] | PrivacyEvent) -> tuple[PrivacyEvent, ...]:
    if isinstance(events, Sequence):
        return tuple(events)
    return (events,)


class LedgerAccount:
    """The composed cost of the charges against one budget.

    Parameters
    ----------
    composition
        How charges compose (:class:`Composition`).
    delta
        The budget's delta: RDP and PLD totals are converted at it; Basic deltas must sum to
        at most it.
    basic_accountant
        The accountant that prices each charge standalone under ``Basic`` composition.

    """

    def __init__(
        self,
        composition: Composition | str,
        delta: Decimal | str,
        *,
        basic_accountant: Accountant | str = Accountant.RDP,
    ) -> None:
        self.composition = Composition.parse(composition)
        self.delta = parse_delta(delta)
        self.basic_accountant = Accountant.parse(basic_accountant)
        self._charges: dict[str, _Charge] = {}
        self._rdp = np.zeros(len(RDP_ORDERS), dtype=np.float64)
        self._pld: Any = None
        self._basic_epsilon = Decimal(0)
        self._basic_delta = Decimal(0)

    def __len__(self) -> int:
        """Return the number of charges in the ledger."""
        return len(self._charges)

    def keys(self) -> list[str]:
        """Return the keys of the charges, in the order they were added."""
        return list(self._charges)

    def _charge(
        self, key: str, events: Sequence[PrivacyEvent] | PrivacyEvent, delta: object
    ) -> _Charge:
        evs = _as_events(events)
        charge_delta = self.delta if delta is None else parse_delta(to_decimal(delta, "delta"))
        curve = None
        pld = None
        epsilon = Decimal(0)
        if self.composition is Composition.RDP:
            curve = np.array(RdpCurve.from_events(evs).values, dtype=np.float64)
        elif self.composition is Composition.PLD:
            for event in evs:
                pld = pld_of(event) if pld is None else pld.compose(pld_of(event))
        else:
            epsilon = epsilon_of(list(evs), charge_delta, self.basic_accountant) if evs else epsilon
        return _Charge(key, evs, charge_delta, epsilon, curve, pld)

    def add(
        self,
        events: Sequence[PrivacyEvent] | PrivacyEvent,
        *,
        key: str | None = None,
        delta: Decimal | str | None = None,
    ) -> str:
        """Add one charge (all its events compose into the ledger).

        Parameters
        ----------
        events
            The events of the charge.
        key
            A unique key (e.g. the job's UID); a fresh one is made when not given.
        delta
            The charge's own delta, used by ``Basic`` composition only.

        Returns
        -------
        str
            The charge's key.

        Raises
        ------
        InvalidPrivacyParameterError
            If ``key`` is already in the ledger or ``delta`` is invalid.

        """
        key = key if key is not None else f"charge-{len(self._charges)}-{id(events)}"
        if key in self._charges:
            raise InvalidPrivacyParameterError(f"charge {key!r} is already in the ledger.")
        charge = self._charge(key, events, delta)
        self._charges[key] = charge
        self._absorb(charge)
        return key

    def add_basic(
        self, epsilon: Decimal | str, delta: Decimal | str, *, key: str | None = None
    ) -> str:
        """Add a charge known only by its (epsilon, delta), e.g. a folded aggregate (Basic only).

        Raises
        ------
        InvalidPrivacyParameterError
            Under RDP or PLD composition (a bare epsilon does not compose there), or when
            ``key`` is taken or a value is invalid.

        """
        if self.composition is not Composition.BASIC:
            raise InvalidPrivacyParameterError(
                f"a charge given only as epsilon {epsilon} cannot compose under "
                f"{self.composition.value} composition; give its events."
            )
        key = key if key is not None else f"charge-{len(self._charges)}-basic"
        if key in self._charges:
            raise InvalidPrivacyParameterError(f"charge {key!r} is already in the ledger.")
        value = to_decimal(epsilon, "epsilon")
        if value < 0:
            raise InvalidPrivacyParameterError(f"epsilon {epsilon!r} must not be negative.")
        charge_delta = to_decimal(delta, "delta")
        if not 0 <= charge_delta < 1:
            raise InvalidPrivacyParameterError(f"delta {delta!r} must be in [0, 1).")
        charge = _Charge(key, (), charge_delta, value, None, None)
        self._charges[key] = charge
        self._absorb(charge)
        return key

    def _absorb(self, charge: _Charge) -> None:
        if charge.curve is not None:
            self._rdp = self._rdp + charge.curve
        if charge.pld is not None:
            self._pld = charge.pld if self._pld is None else self._pld.compose(charge.pld)
        self._basic_epsilon += charge.epsilon
        self._basic_delta += charge.delta

    def remove(self, key: str) -> None:
        """Remove a charge (a released reservation) and recompose the others.

        Raises
        ------
        InvalidPrivacyParameterError
            If no charge has this key.

        """
        if key not in self._charges:
            raise InvalidPrivacyParameterError(f"charge {key!r} is not in the ledger.")
        del self._charges[key]
        # Recompose from the cached per-charge forms rather than subtracting, so that removing
        # a charge leaves exactly the floats a ledger without it would hold.
        self._rdp = np.zeros(len(RDP_ORDERS), dtype=np.float64)
        self._pld = None
        self._basic_epsilon = Decimal(0)
        self._basic_delta = Decimal(0)
        for charge in self._charges.values():
            self._absorb(charge)

    def _epsilon_with(self, extra: _Charge | None) -> tuple[Decimal, Decimal]:
        if self.composition is Composition.RDP:
            total = self._rdp if extra is None or extra.curve is None else self._rdp + extra.curve
            return RdpCurve(tuple(total.tolist())).epsilon(self.delta), self.delta
        if self.composition is Composition.PLD:
            pld = self._pld
            if extra is not None and extra.pld is not None:
                pld = extra.pld if pld is None else pld.compose(extra.pld)
            if pld is None:
                return Decimal(0), self.delta
            return epsilon_from_float(
                float(pld.get_epsilon_for_delta(float(self.delta)))
            ), self.delta
        epsilon, delta = self._basic_epsilon, self._basic_delta
        if extra is not None:
            epsilon, delta = epsilon + extra.epsilon, delta + extra.delta
        return round_up(epsilon), delta

    def spent_epsilon(self) -> Decimal:
        """Return the epsilon the ledger spends (rounded up)."""
        return self._epsilon_with(None)[0]

    def spent_delta(self) -> Decimal:
        """Return the delta the ledger spends: the sum for ``Basic``, the budget's otherwise."""
        return self._epsilon_with(None)[1]

    def would_fit(
        self,
        events: Sequence[PrivacyEvent] | PrivacyEvent,
        budget_epsilon: Decimal | str,
        *,
        delta: Decimal | str | None = None,
    ) -> Fit:
        """Check one more charge against the budget without adding it.

        Parameters
        ----------
        events
            The events of the candidate charge.
        budget_epsilon
            The budget's total epsilon.
        delta
            The charge's own delta (``Basic`` only; the budget's delta when not given).

        Returns
        -------
        Fit
            Whether it fits, and the epsilon spent and remaining after it.

        """
        budget = to_decimal(budget_epsilon, "budget epsilon")
        extra = self._charge("candidate", events, delta)
        epsilon_after, delta_after = self._epsilon_with(extra)
        fits = epsilon_after <= budget and delta_after <= self.delta
        return Fit(
            fits=fits,
            epsilon_after=epsilon_after,
            remaining_after=remaining(budget, epsilon_after),
            delta_after=delta_after,
        )
