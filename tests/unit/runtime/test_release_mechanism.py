"""The Gaussian mechanism releasing test metrics: unbiased, the right variance, clipped."""

from __future__ import annotations

import math
import random
import statistics

import numpy as np
import pytest

from ppml_runtime.release.mechanism import EvaluationSums, release_test_metrics

#: Standard errors a statistical check may be off by: a fair draw lands farther with probability
#: below 1e-15 (|N(0,1)| > 8), so a failure means a wrong mechanism, not bad luck.
Z = 8.0
DRAWS = 20_000


def sums(records: int, correct: int, loss_sum: float, bound: float = 10.0) -> EvaluationSums:
    """Sums whose per-record losses all sit inside [0, bound]."""
    hits = np.zeros(records, dtype=bool)
    hits[:correct] = True
    return EvaluationSums.of(hits, np.full(records, loss_sum / records), bound)


def check_mean_and_variance(values: list[float], mean: float, std: float) -> None:
    sample_mean = statistics.fmean(values)
    assert abs(sample_mean - mean) < Z * std / math.sqrt(len(values)), (sample_mean, mean)
    # The sample variance of normal draws has relative standard error sqrt(2 / (n - 1)).
    ratio = statistics.variance(values) / std**2
    assert abs(ratio - 1) < Z * math.sqrt(2 / (len(values) - 1)), ratio


def test_released_metrics_are_unbiased_with_the_mechanisms_variance():
    # Far from the clipping bounds (accuracy 0.73 +- 0.02, loss 5 +- 0.2), so clipping never acts.
    exact = sums(records=100, correct=73, loss_sum=500.0, bound=10.0)
    sigma = 2.0
    draws = [release_test_metrics(exact, sigma, declared_records=100) for _ in range(DRAWS)]
    assert all(d is not None for d in draws)
    check_mean_and_variance([d.accuracy for d in draws], 0.73, sigma / 100)
    check_mean_and_variance([d.loss for d in draws], 5.0, sigma * 10.0 / 100)


def test_accuracy_and_loss_noises_are_independent():
    exact = sums(records=100, correct=50, loss_sum=500.0)
    draws = [release_test_metrics(exact, 2.0, declared_records=100) for _ in range(DRAWS)]
    correlation = np.corrcoef([d.accuracy for d in draws], [d.loss for d in draws])[0, 1]
    assert abs(correlation) < Z / math.sqrt(DRAWS)


def test_noise_comes_from_os_entropy_not_from_seeded_generators():
    exact = sums(records=50, correct=25, loss_sum=100.0)
    first = []
    for _ in range(2):
        random.seed(0)
        np.random.seed(0)
        first.append(release_test_metrics(exact, 1.0, declared_records=50))
    assert first[0] != first[1]


class Fixed:
    """A noise source returning fixed draws, in order."""

    def __init__(self, *draws: float) -> None:
        self.draws = list(draws)
        self.sigmas: list[float] = []

    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        self.sigmas.append(sigma)
        return self.draws.pop(0)


@pytest.mark.parametrize(
    ("noise", "expected"),
    [
        pytest.param((0.0, 0.0), (0.5, 2.0), id="no noise: the exact means"),
        pytest.param((-1000.0, -1000.0), (0.0, 0.0), id="large negative noise clips to 0"),
        pytest.param((1000.0, 1000.0), (1.0, 10.0), id="large positive noise clips to 1 and B"),
        pytest.param((5.0, -50.0), (0.55, 1.5), id="noise divided by the declared size"),
    ],
)
def test_release_clips_to_the_metric_ranges(noise, expected):
    exact = sums(records=100, correct=50, loss_sum=200.0, bound=10.0)
    source = Fixed(*noise)
    released = release_test_metrics(exact, 3.0, declared_records=100, noise=source)
    assert (released.accuracy, released.loss) == pytest.approx(expected)
    assert source.sigmas == [3.0, 30.0]  # sensitivity 1 and B


def test_each_loss_is_clipped_to_the_bound_before_summing():
    losses = np.array([0.5, 25.0, math.inf, math.nan, -0.1])
    s = EvaluationSums.of(np.array([1, 0, 0, 1, 1]), losses, loss_bound=2.0)
    assert (s.records, s.correct) == (5, 3)
    assert s.clipped_loss == pytest.approx(0.5 + 2.0 + 2.0 + 2.0 + 0.0)
    released = release_test_metrics(s, 1.0, declared_records=5, noise=Fixed(0.0, 0.0))
    assert released.loss == pytest.approx(6.5 / 5)


@pytest.mark.parametrize(
    ("sigma", "declared"),
    [pytest.param(None, 100, id="no noise multiplier"), pytest.param(1.0, 0, id="no test split")],
)
def test_nothing_is_released_without_sigma_or_records(sigma, declared):
    exact = sums(records=100, correct=50, loss_sum=100.0)
    assert release_test_metrics(exact, sigma, declared_records=declared) is None
