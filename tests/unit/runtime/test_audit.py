"""A cheap two-run canary audit of the DP-SGD step (Jagielski et al. 2020 style).

Each trial trains one step from the same start on a data set with the canary (a record whose
gradient is huge, clipped to C) or with the canary replaced by a zero-gradient record, and
records how far the update moved along the canary's direction. A threshold on that statistic is
a membership test; its true and false positive rates, bounded by Clopper-Pearson intervals, give
an empirical lower bound on epsilon. It must stay below the claimed epsilon, and it must exceed
that claim when the noise is removed: the audit is able to fail.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import beta

from ppml_runtime.training.dp_sgd import ArrayDataset, make_privacy_engine, train_private

from .dp_helpers import params

TRIALS = 150
ALPHA = 0.05
DELTA = 1e-5
SIGMA = 2.0


def clopper_pearson(successes: int, trials: int) -> tuple[float, float]:
    low = 0.0 if successes == 0 else float(beta.ppf(ALPHA, successes, trials - successes + 1))
    high = (
        1.0
        if successes == trials
        else float(beta.ppf(1 - ALPHA, successes + 1, trials - successes))
    )
    return low, high


def epsilon_lower_bound(inside: list[float], outside: list[float]) -> float:
    best = 0.0
    for threshold in sorted(set(inside) | set(outside)):
        tpr_low, _ = clopper_pearson(sum(s >= threshold for s in inside), len(inside))
        _, fpr_high = clopper_pearson(sum(s >= threshold for s in outside), len(outside))
        if tpr_low - DELTA > 0 and fpr_high > 0:
            best = max(best, math.log((tpr_low - DELTA) / fpr_high))
    return best


def audit_statistics(noise_multiplier: float, canary: bool) -> list[float]:
    n, clip = 8, 1.0
    x = torch.zeros(n, 4)
    y = torch.zeros(n, dtype=torch.long)
    if canary:
        x[0] = torch.tensor([4e3, -2e3, 1e3, 3e3])
    # At zero weights the canary's gradient is (softmax - onehot) x^T: its direction is known.
    direction = torch.outer(
        torch.tensor([-0.5, 0.5]), torch.tensor([4e3, -2e3, 1e3, 3e3])
    ).flatten()
    direction /= direction.norm()
    stats = []
    for _ in range(TRIALS):
        model = torch.nn.Linear(4, 2, bias=False)
        torch.nn.init.zeros_(model.weight)
        train_private(
            model,
            ArrayDataset(x, y),
            params(noise_multiplier=noise_multiplier, max_grad_norm=clip, sample_rate=1.0),
        )
        update = model.weight.detach().flatten()
        stats.append(float(-(update @ direction) * n / clip))  # = 1[canary] + sigma * N(0, 1)
    return stats


def claimed_epsilon() -> float:
    engine = make_privacy_engine("rdp")
    engine.accountant.history = [(SIGMA, 1.0, 1)]
    return float(engine.accountant.get_epsilon(delta=DELTA))


@pytest.mark.parametrize(
    ("noise", "verdict"),
    [
        pytest.param(SIGMA, "below", id="with the paid noise the bound stays below the claim"),
        pytest.param(0.0, "above", id="without noise the bound exceeds the claim (audit fails)"),
    ],
)
def test_canary_audit(noise, verdict):
    claimed = claimed_epsilon()
    bound = epsilon_lower_bound(audit_statistics(noise, True), audit_statistics(noise, False))
    if verdict == "below":
        assert bound < claimed
    else:
        assert bound > 1.5 * claimed
