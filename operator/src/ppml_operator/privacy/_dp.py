"""Translation of this library's events into dp_accounting's events and PLDs.

dp_accounting is imported lazily, inside the functions, so that importing
:mod:`ppml_operator.privacy` (for its events and decimal helpers) stays cheap.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from ppml_operator.privacy.events import (
    ClientLevelDpEvent,
    DpSgdEvent,
    FixedClientSamplingDpEvent,
    GaussianEvent,
    LaplaceEvent,
    LocalDpSgdEvent,
    PrivacyEvent,
)

PLD_VALUE_DISCRETIZATION_INTERVAL = 1e-4
"""Discretisation interval of privacy-loss distributions (dp_accounting's PLDAccountant default).

dp_accounting discretises pessimistically, so a coarser interval costs tightness, not safety.
"""


REPLACE_ONE_SENSITIVITY = 2
"""L2 sensitivity, in clipping norms, of a sum of clipped updates when one is replaced.

Replacing one client's update ``u`` (``|u| <= C``) by another ``u'`` moves the sum by
``|u - u'| <= 2 C``; adding or removing one moves it by at most ``C``.
"""


def neighboring_relation(event: PrivacyEvent) -> Any:
    """Return the dp_accounting ``NeighboringRelation`` under which ``event`` is priced.

    :class:`~ppml_operator.privacy.events.FixedClientSamplingDpEvent` is priced under
    ``REPLACE_ONE`` (the only relation dp_accounting's RDP accountant accepts for
    ``SampledWithoutReplacementDpEvent``); every other event under ``ADD_OR_REMOVE_ONE``.
    """
    from dp_accounting import NeighboringRelation

    if isinstance(event, FixedClientSamplingDpEvent):
        return NeighboringRelation.REPLACE_ONE
    return NeighboringRelation.ADD_OR_REMOVE_ONE


def to_dp_event(event: PrivacyEvent) -> Any:
    """Return the dp_accounting ``DpEvent`` describing ``event``.

    Parameters
    ----------
    event
        Any :data:`~ppml_operator.privacy.events.PrivacyEvent`.

    Returns
    -------
    dp_accounting.DpEvent
        ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(z)), steps)`` for the
        DP-SGD family, ``SelfComposedDpEvent(GaussianDpEvent(z), count)`` and
        ``SelfComposedDpEvent(LaplaceDpEvent(b), count)`` for the one-off mechanisms, and
        ``SelfComposedDpEvent(SampledWithoutReplacementDpEvent(clients, clientsPerRound,
        GaussianDpEvent(z / 2)), rounds)`` for fixed-size client sampling (replace-one: the
        sensitivity is two clipping norms; ``GaussianDpEvent(z / 2)`` alone, composed
        ``rounds`` times, when every client takes part in every round: no sampling at all).

    """
    import dp_accounting

    if isinstance(event, FixedClientSamplingDpEvent):
        gaussian = dp_accounting.GaussianDpEvent(
            float(event.noise_multiplier) / REPLACE_ONE_SENSITIVITY
        )
        if event.clients_per_round == event.clients:
            return dp_accounting.SelfComposedDpEvent(gaussian, event.rounds)
        return dp_accounting.SelfComposedDpEvent(
            dp_accounting.SampledWithoutReplacementDpEvent(
                event.clients, event.clients_per_round, gaussian
            ),
            event.rounds,
        )
    if isinstance(event, DpSgdEvent | LocalDpSgdEvent):
        count = event.steps
    elif isinstance(event, ClientLevelDpEvent):
        count = event.rounds
    elif isinstance(event, GaussianEvent):
        return dp_accounting.SelfComposedDpEvent(
            dp_accounting.GaussianDpEvent(float(event.noise_multiplier)), event.count
        )
    elif isinstance(event, LaplaceEvent):
        return dp_accounting.SelfComposedDpEvent(
            dp_accounting.LaplaceDpEvent(float(event.scale_over_sensitivity)), event.count
        )
    else:  # pragma: no cover - the union is exhaustive
        raise TypeError(f"{event!r} is not a privacy event")
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            float(event.sample_rate),
            dp_accounting.GaussianDpEvent(float(event.noise_multiplier)),
        ),
        count,
    )


# PLDs of low-noise events reach megabytes (14.5 MB retained at the accountant's PLD_MAX_STEPS
# and PLD_MAX_EPSILON): keep the cache small, so that it holds at most about 120 MB.
@lru_cache(maxsize=8)
def pld_of(event: PrivacyEvent) -> Any:
    """Return the privacy-loss distribution of ``event`` (cached, events are hashable).

    Built exactly as dp_accounting's ``PLDAccountant`` builds it for the same ``DpEvent``
    (``ADD_OR_REMOVE_ONE`` neighbours, pessimistic discretisation at
    :data:`PLD_VALUE_DISCRETIZATION_INTERVAL`).
    """
    from dp_accounting.pld import privacy_loss_distribution as pld

    interval = PLD_VALUE_DISCRETIZATION_INTERVAL
    if isinstance(event, GaussianEvent):
        return pld.from_gaussian_mechanism(
            standard_deviation=float(event.noise_multiplier) / math.sqrt(event.count),
            value_discretization_interval=interval,
        )
    if isinstance(event, FixedClientSamplingDpEvent):  # the accountant never asks
        raise TypeError(f"{event!r} has no PLD here: it is priced with RDP only")
    if isinstance(event, LaplaceEvent):
        return pld.from_laplace_mechanism(
            parameter=float(event.scale_over_sensitivity),
            value_discretization_interval=interval,
        ).self_compose(event.count)
    count = event.rounds if isinstance(event, ClientLevelDpEvent) else event.steps
    return pld.from_gaussian_mechanism(
        standard_deviation=float(event.noise_multiplier),
        value_discretization_interval=interval,
        sampling_prob=float(event.sample_rate),
    ).self_compose(count)
