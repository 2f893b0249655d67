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
    GaussianEvent,
    LaplaceEvent,
    LocalDpSgdEvent,
    PrivacyEvent,
)

PLD_VALUE_DISCRETIZATION_INTERVAL = 1e-4
"""Discretisation interval of privacy-loss distributions (dp_accounting's PLDAccountant default).

dp_accounting discretises pessimistically, so a coarser interval costs tightness, not safety.
"""


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
        ``SelfComposedDpEvent(LaplaceDpEvent(b), count)`` for the one-off mechanisms.

    """
    import dp_accounting

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
