"""DP-SGD correctness: per-sample gradients, clipping, noise, Poisson sampling, steps, epsilon."""

from __future__ import annotations

import math
import warnings
from decimal import Decimal
from fractions import Fraction

import pytest
import torch

from ppml_runtime.contract import exact_decimal_str
from ppml_runtime.training.dp_sgd import (
    ArrayDataset,
    accountant_events,
    choose_grad_sample_mode,
    make_poisson_loader,
    train_private,
)
from ppml_runtime.training.models import build_cnn, build_mlp

from .dp_helpers import one_step_update, params, per_sample_grads

MODES = ["bookkeeping", "ghost", "hooks"]


def tiny_data(n: int = 12, features: int = 16, classes: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    return x, y


@pytest.mark.parametrize(
    "make_model",
    [
        pytest.param(lambda: build_mlp(16, 3, [8]), id="mlp"),
        pytest.param(lambda: build_cnn(3, (1, 4, 4), width=4), id="cnn with groupnorm"),
    ],
)
def test_per_sample_gradients_equal_microbatch_gradients(make_model):
    from opacus import GradSampleModule

    torch.manual_seed(0)
    model = make_model()
    x, y = tiny_data()
    expected = per_sample_grads(model, x, y)
    gsm = GradSampleModule(model, loss_reduction="sum")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        torch.nn.functional.cross_entropy(gsm(x), y, reduction="sum").backward()
    got = torch.cat([p.grad_sample.flatten(1) for p in model.parameters()], dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "clip", [pytest.param(1e-3, id="every record clipped"), pytest.param(1e3, id="none clipped")]
)
def test_update_is_mean_of_clipped_per_sample_gradients(mode, clip):
    torch.manual_seed(1)
    model = build_mlp(16, 3, [8])
    x, y = tiny_data()
    grads = per_sample_grads(model, x, y)
    factors = (clip / (grads.norm(dim=1) + 1e-6)).clamp(max=1.0)
    expected = -(grads * factors[:, None]).sum(0) / x.shape[0]
    update = one_step_update(model, x, y, grad_sample_mode=mode, max_grad_norm=clip)
    torch.testing.assert_close(update, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("mode", MODES)
def test_canary_with_huge_gradient_contributes_exactly_the_clipping_norm(mode):
    clip, n = 0.7, 10
    model = torch.nn.Linear(4, 3, bias=False)
    torch.nn.init.normal_(model.weight)
    x, y = tiny_data(n, 4)
    x[0] = 0.0  # a record with zero gradient (no bias): the canary replaces it
    with_canary = x.clone()
    with_canary[0] = torch.tensor([3e4, -1e4, 2e4, 5e3])
    base = one_step_update(model, x, y, grad_sample_mode=mode, max_grad_norm=clip)
    canary = one_step_update(model, with_canary, y, grad_sample_mode=mode, max_grad_norm=clip)
    contribution = ((canary - base) * n).norm().item()  # undo the mean over qN = n records
    assert contribution == pytest.approx(clip, rel=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_noise_standard_deviation_is_sigma_c_over_expected_batch(mode):
    sigma, clip, n, q = 1.5, 0.7, 64, 0.25
    model = torch.nn.Linear(1000, 5, bias=False)
    torch.nn.init.zeros_(model.weight)
    x = torch.zeros(n, 1000)  # zero features: every per-sample gradient is exactly zero
    y = torch.randint(0, 5, (n,))
    update = one_step_update(
        model,
        x,
        y,
        grad_sample_mode=mode,
        noise_multiplier=sigma,
        max_grad_norm=clip,
        sample_rate=q,
        noise_seed=3,
    )
    expected_std = sigma * clip / (q * n)  # sigma * C / B with B the expected batch size
    assert update.std().item() == pytest.approx(expected_std, rel=0.04)
    assert abs(update.mean().item()) < 4 * expected_std / math.sqrt(update.numel())


def test_poisson_batch_sizes_have_the_right_mean_and_variance():
    n, q, batches = 2000, 0.05, 400
    data = ArrayDataset(torch.zeros(n, 1), torch.zeros(n, dtype=torch.long))
    sizes = []
    while len(sizes) < batches:
        sizes += [int(labels.shape[0]) for _, labels in make_poisson_loader(data, q, seed=11)]
    sizes_t = torch.tensor(sizes[:batches], dtype=torch.float64)
    mean_se = math.sqrt(n * q * (1 - q) / batches)
    assert abs(sizes_t.mean().item() - n * q) < 4 * mean_se
    assert sizes_t.var().item() == pytest.approx(n * q * (1 - q), rel=0.25)
    assert len(set(sizes)) > 10  # variable batches, not a fixed batch size


@pytest.mark.parametrize(
    ("steps", "rate"),
    [
        pytest.param(3, 0.3, id="less than one epoch"),
        pytest.param(4, 0.3, id="exactly one Poisson epoch (ceil(1/q) steps)"),
        pytest.param(7, 0.3, id="stops mid-epoch"),
        pytest.param(5, 1.0, id="full batches"),
    ],
)
def test_never_more_steps_than_paid_for(steps, rate):
    x, y = tiny_data(20, 4)
    calls = []
    result = train_private(
        torch.nn.Linear(4, 3),
        ArrayDataset(x, y),
        params(steps=steps, sample_rate=rate, noise_multiplier=1.0),
        on_step=lambda step, loss, eps: calls.append(step),
    )
    assert calls == list(range(1, steps + 1))
    assert result.steps_completed == steps
    assert accountant_events_steps(result.events) == steps


def accountant_events_steps(events):
    return sum(n for _, _, n in events)


@pytest.mark.parametrize(
    ("runtime", "operator", "rel"),
    [pytest.param("rdp", "RDP", 2e-3, id="rdp"), pytest.param("prv", "PLD", 1e-2, id="prv vs pld")],
)
def test_runtime_accountant_agrees_with_operator_charge(runtime, operator, rel):
    from ppml_operator.privacy import accountant as op_accountant
    from ppml_operator.privacy.events import DpSgdEvent

    n, batch, steps, sigma = 300, 20, 37, 1.1
    rate = exact_decimal_str(Fraction(batch, n))  # what the operator writes into the config
    x, y = tiny_data(n, 4)
    result = train_private(
        torch.nn.Linear(4, 3),
        ArrayDataset(x, y),
        params(steps=steps, sample_rate=float(rate), noise_multiplier=sigma, accountant=runtime),
    )
    assert result.events == [(sigma, float(rate), steps)]
    charged = op_accountant.epsilon_of(
        DpSgdEvent(Decimal(repr(sigma)), Decimal(rate), steps), "1e-5", operator
    )
    assert result.epsilon == pytest.approx(float(charged), rel=rel)


def test_accountant_history_uses_the_exact_rate_not_one_over_loader_length():
    from ppml_runtime.training.dp_sgd import make_privacy_engine

    rate = float(Fraction(64, 1437))
    x, y = tiny_data(1437, 2)
    result = train_private(
        torch.nn.Linear(2, 3),
        ArrayDataset(x, y),
        params(steps=2, sample_rate=rate, noise_multiplier=1.0),
    )
    assert result.events == [(1.0, rate, 2)]
    assert rate != 1 / int(1 / rate)  # what PrivacyEngine.make_private alone would record
    assert accountant_events(make_privacy_engine("rdp").accountant) == []


class Residual(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Linear(4, 4)

    def forward(self, x):
        return x + self.inner(x)


@pytest.mark.parametrize(
    ("model", "requested", "chosen"),
    [
        pytest.param(lambda: build_mlp(4, 2, [3]), "auto", "bookkeeping", id="mlp: book-keeping"),
        pytest.param(
            lambda: torch.nn.Linear(4, 2), "auto", "bookkeeping", id="logistic regression"
        ),
        pytest.param(lambda: Residual(), "auto", "ghost", id="other linear model gets ghost"),
        pytest.param(lambda: build_cnn(2, (1, 8, 8)), "auto", "hooks", id="cnn gets hooks"),
        pytest.param(
            lambda: torch.nn.Sequential(*[torch.nn.Linear(3, 3)] * 2),
            "auto",
            "hooks",
            id="reused module gets hooks",
        ),
        pytest.param(lambda: build_cnn(2, (1, 8, 8)), "ghost", "ghost", id="explicit ghost kept"),
    ],
)
def test_auto_mode_choice(model, requested, chosen):
    assert choose_grad_sample_mode(model(), requested) == chosen


def test_bookkeeping_refuses_models_it_cannot_clip_exactly():
    from ppml_runtime.training.errors import InvalidConfigError

    with pytest.raises(InvalidConfigError, match="bookkeeping needs a Linear model"):
        choose_grad_sample_mode(build_cnn(2, (1, 8, 8)), "bookkeeping")
