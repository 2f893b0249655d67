"""Small helpers shared by the DP-correctness tests."""

from __future__ import annotations

import copy

import torch

from ppml_runtime.training.dp_sgd import ArrayDataset, DpSgdParams, train_private


def params(**overrides) -> DpSgdParams:
    base = dict(
        noise_multiplier=0.0,
        sample_rate=1.0,
        max_grad_norm=1.0,
        steps=1,
        delta=1e-5,
        learning_rate=1.0,
        grad_sample_mode="hooks",
    )
    return DpSgdParams(**(base | overrides))


def one_step_update(model: torch.nn.Module, x, y, **overrides) -> torch.Tensor:
    """Train a copy of ``model`` and return the flat parameter change."""
    trained = copy.deepcopy(model)
    before = torch.cat([p.detach().flatten().clone() for p in trained.parameters()])
    train_private(trained, ArrayDataset(x, y), params(**overrides))
    after = torch.cat([p.detach().flatten() for p in trained.parameters()])
    return after - before


def per_sample_grads(model: torch.nn.Module, x, y) -> torch.Tensor:
    """Per-record gradients by plain autograd, one microbatch of one record at a time."""
    grads = []
    for i in range(x.shape[0]):
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        loss.backward()
        grads.append(torch.cat([p.grad.flatten().clone() for p in model.parameters()]))
    model.zero_grad()
    return torch.stack(grads)
