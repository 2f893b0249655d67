"""RDP curves on a fixed grid of orders: the composable form of a privacy charge.

Rényi-DP composes by addition, order by order, so the cost of a ledger of charges is the sum of
their curves, converted once to epsilon at the budget's delta. The grid :data:`RDP_ORDERS` is
fixed (it is dp_accounting's default grid, written out here so that a library upgrade cannot
silently change the meaning of stored curves); :data:`RDP_ORDERS_ID` names it in storage.

The conversion from RDP to (epsilon, delta) is dp_accounting's ``compute_epsilon``: the improved
bound of Canonne, Kamath and Steinke (2020, Prop. 12) = Balle et al. (2020),
``eps = rdp + log1p(-1/a) - log(delta * a) / (a - 1)`` for orders ``a > 1.01``, minimised over the
grid, with a KL-divergence shortcut to zero. Opacus' RDP accountant uses the same formula
(written ``rdp - (log(delta) + log(a)) / (a - 1) + log((a - 1) / a)``) on a smaller grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Final

from ppml_operator.privacy._dp import neighboring_relation, to_dp_event
from ppml_operator.privacy.decimals import epsilon_from_float
from ppml_operator.privacy.errors import InvalidPrivacyParameterError
from ppml_operator.privacy.events import FixedClientSamplingDpEvent, PrivacyEvent

RDP_ORDERS: Final[tuple[float, ...]] = tuple(
    [1 + x / 10.0 for x in range(1, 100)]
    + [float(a) for a in range(11, 64)]
    + [128.0, 256.0, 512.0, 1024.0]
)
"""The Rényi orders of every curve (156 orders, 1.1 to 1024)."""

RDP_ORDERS_ID: Final = "dp-accounting-default-v1"
"""Name of :data:`RDP_ORDERS` for storage: a stored curve is only valid on the same grid."""


def _accountant_curve(event: PrivacyEvent) -> tuple[float, ...]:
    from dp_accounting.rdp import RdpAccountant

    accountant = RdpAccountant(
        orders=list(RDP_ORDERS), neighboring_relation=neighboring_relation(event)
    )
    accountant.compose(to_dp_event(event))
    # A negative or NaN value can only be numerical trouble (RDP is non-negative), and
    # dp_accounting's conversion would turn a negative one into epsilon 0 at that order: treat
    # it as "no bound at this order" instead, which can only raise epsilon.
    return tuple(float(v) if v >= 0 else math.inf for v in accountant.rdp)


@lru_cache(maxsize=8192)
def _event_curve(event: PrivacyEvent) -> tuple[float, ...]:
    curve = _accountant_curve(event)
    if isinstance(event, FixedClientSamplingDpEvent) and event.clients_per_round < event.clients:
        # The without-replacement bound (Wang, Balle, Kasiviswanathan 2019, Thm 27) is loose
        # for large fractions (9 of 10 clients costs more than 10 of 10). Sampling never costs
        # more than taking every client: the output is a mixture over subsets with the same
        # weights under both neighbours, each pair of components a Gaussian pair at most 2C
        # apart, and Renyi divergence of such mixtures is at most the largest of the pairs'.
        # Both curves are valid at every order, so is their minimum.
        everyone = _accountant_curve(
            FixedClientSamplingDpEvent(
                event.noise_multiplier, event.clients, event.clients, event.rounds
            )
        )
        curve = tuple(min(a, b) for a, b in zip(curve, everyone, strict=True))
    return curve


@dataclass(frozen=True)
class RdpCurve:
    """Rényi-DP guarantees of a mechanism at every order of :data:`RDP_ORDERS`.

    Attributes
    ----------
    values
        One RDP value per order (non-negative; ``inf`` where the order gives no bound).

    """

    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.values) != len(RDP_ORDERS):
            raise InvalidPrivacyParameterError(
                f"an RDP curve needs {len(RDP_ORDERS)} values, one per order, "
                f"not {len(self.values)}."
            )

    @classmethod
    def zero(cls) -> RdpCurve:
        """Return the curve of no mechanism at all (every value 0)."""
        return cls(tuple(0.0 for _ in RDP_ORDERS))

    @classmethod
    def from_event(cls, event: PrivacyEvent) -> RdpCurve:
        """Return the curve of one event, computed by dp_accounting's ``RdpAccountant``."""
        return cls(_event_curve(event))

    @classmethod
    def from_events(cls, events: Iterable[PrivacyEvent]) -> RdpCurve:
        """Return the curve of the composition of ``events`` (the sum of their curves)."""
        total = cls.zero()
        for event in events:
            total = total + cls.from_event(event)
        return total

    def __add__(self, other: RdpCurve) -> RdpCurve:
        """Compose two mechanisms: add their curves order by order."""
        if not isinstance(other, RdpCurve):
            return NotImplemented
        return RdpCurve(tuple(a + b for a, b in zip(self.values, other.values, strict=True)))

    def scaled(self, count: int) -> RdpCurve:
        """Return the curve of ``count`` independent runs of this mechanism."""
        return RdpCurve(tuple(count * v for v in self.values))

    def epsilon_float(self, delta: Decimal | float) -> float:
        """Return the float epsilon at ``delta`` (dp_accounting's conversion)."""
        from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

        eps, _ = compute_epsilon(RDP_ORDERS, self.values, float(delta))
        return float(eps)

    def epsilon(self, delta: Decimal) -> Decimal:
        """Return epsilon at ``delta``, rounded up to the library's significant digits."""
        return epsilon_from_float(self.epsilon_float(delta))

    def to_list(self) -> list[str]:
        """Return the values as exact decimal strings (``repr`` of each float) for storage."""
        return [repr(v) for v in self.values]

    @classmethod
    def from_list(cls, values: Sequence[str | float]) -> RdpCurve:
        """Rebuild a curve written by :meth:`to_list` (floats are accepted too).

        Raises
        ------
        InvalidPrivacyParameterError
            If the list has the wrong length or holds a negative or malformed value.

        """
        parsed: list[float] = []
        for value in values:
            try:
                number = float(value)
            except (TypeError, ValueError) as err:
                raise InvalidPrivacyParameterError(f"RDP value {value!r} is not a number.") from err
            if not number >= 0:
                raise InvalidPrivacyParameterError(
                    f"RDP value {value!r} must be a non-negative number."
                )
            parsed.append(number)
        return cls(tuple(parsed))
