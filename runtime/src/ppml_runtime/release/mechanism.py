"""The Gaussian mechanism that releases the test metrics to the analyst.

Given, for each of the test split's records, whether the model classified it correctly
(``c_i`` in ``{0, 1}``) and its cross-entropy loss ``l_i``, and the test split's declared size
``n`` (:func:`ppml_runtime.contract.declared_test_records`, public: it follows from the config), the
runtime releases::

    accuracy = clip((sum_i c_i + N(0, sigma^2)) / n, 0, 1)
    loss     = clip((sum_i min(l_i, B) + N(0, (sigma * B)^2)) / n, 0, B)

with ``sigma = release.metricsNoiseMultiplier`` and ``B = release.lossBound`` (a loss that is
not finite counts as ``B``). These are two Gaussian mechanisms, each with noise multiplier
``sigma``: when one record is added, removed or replaced, the sum of correct predictions moves
by at most 1 and the sum of clipped losses by at most ``B``, and the noise's standard deviation
is ``sigma`` times that sensitivity. Dividing by the public ``n`` and clipping to the range are
post-processing. The operator charges the release as ``RELEASE_GAUSSIAN_EVENTS`` (two)
``GaussianDpEvent(sigma)`` on the data set's budget, on top of the training's charge.

The noise comes from the operating system's entropy (:class:`random.SystemRandom`), never from a
seed in the job spec: a seed anyone can read would let them subtract the noise. Tests may pass
their own source.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class NoiseSource(Protocol):
    """What the mechanism draws Gaussian noise from (``random.SystemRandom`` by default)."""

    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        """Draw one value of ``N(mu, sigma^2)``."""
        ...


@dataclass(frozen=True)
class EvaluationSums:
    """Sums over the test split's records, the inputs of the release.

    ``loss`` is the exact sum (owner-side only); ``clipped_loss`` the sum of each record's loss
    clipped to ``[0, loss_bound]``, the one the mechanism releases.
    """

    records: int
    correct: int
    loss: float
    clipped_loss: float
    loss_bound: float

    @classmethod
    def of(cls, correct: np.ndarray, losses: np.ndarray, loss_bound: float) -> EvaluationSums:
        """Sum per-record correctness (0/1) and losses, clipping each loss to ``[0, loss_bound]``.

        A loss that is not finite (a diverged model) counts as ``loss_bound``: each record still
        moves the clipped sum by at most ``loss_bound``.
        """
        hits = np.asarray(correct, dtype=bool).reshape(-1)
        values = np.asarray(losses, dtype=np.float64).reshape(-1)
        if hits.shape != values.shape:
            raise ValueError("correct and losses differ in length")
        clipped = np.clip(
            np.nan_to_num(values, nan=loss_bound, posinf=loss_bound, neginf=0.0), 0.0, loss_bound
        )
        return cls(
            records=int(values.shape[0]),
            correct=int(hits.sum()),
            loss=float(values.sum()),
            clipped_loss=float(clipped.sum()),
            loss_bound=float(loss_bound),
        )

    @property
    def accuracy(self) -> float:
        """The exact test accuracy (NaN for an empty split); never released."""
        return self.correct / self.records if self.records else math.nan

    @property
    def mean_loss(self) -> float:
        """The exact mean test loss (NaN for an empty split); never released."""
        return self.loss / self.records if self.records else math.nan


@dataclass(frozen=True)
class ReleasedMetrics:
    """The test metrics as released to the analyst (differentially private)."""

    accuracy: float
    loss: float


def release_test_metrics(
    sums: EvaluationSums,
    noise_multiplier: float | None,
    declared_records: int,
    noise: NoiseSource | None = None,
) -> ReleasedMetrics | None:
    """Release the test accuracy and loss through the Gaussian mechanism.

    Parameters
    ----------
    sums
        The per-record sums over the test split (their ``loss_bound`` is ``B``).
    noise_multiplier
        ``sigma``; ``None`` releases nothing.
    declared_records
        The test split's declared size ``n`` (public); nothing is released when it is 0.
    noise
        Where the Gaussian noise comes from; fresh operating-system entropy by default.

    Returns
    -------
    ReleasedMetrics or None
        The released accuracy in ``[0, 1]`` and loss in ``[0, B]``, or ``None``.

    """
    if noise_multiplier is None or declared_records <= 0:
        return None
    if not noise_multiplier > 0:
        raise ValueError(f"noise multiplier {noise_multiplier} must be positive")
    source: NoiseSource = noise if noise is not None else random.SystemRandom()
    bound = sums.loss_bound
    noisy_correct = sums.correct + source.gauss(0.0, noise_multiplier)
    noisy_loss = sums.clipped_loss + source.gauss(0.0, noise_multiplier * bound)
    return ReleasedMetrics(
        accuracy=min(max(noisy_correct / declared_records, 0.0), 1.0),
        loss=min(max(noisy_loss / declared_records, 0.0), bound),
    )
