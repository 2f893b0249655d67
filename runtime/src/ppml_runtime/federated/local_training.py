"""One silo's local training in one round: plain SGD (optionally FedProx) or DP-SGD.

Imported only inside a ClientApp's ``fit``/``evaluate``, so torch is loaded only by the
processes that train, and Opacus (about 5 s to import) only by silos under local DP.
Models come from :mod:`ppml_runtime.training.models` and DP-SGD from
:func:`ppml_runtime.training.dp_sgd.train_private`, the same code the DP-SGD trainer runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ppml_runtime.contract import BUILTIN_DATASET_SHAPES, DataConfig, ModelConfig, TrainingParams
from ppml_runtime.federated.silo_budget import steps_in_round

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.data import Dataset

    from ppml_runtime.contract import PrivacyParams
    from ppml_runtime.federated.silo_data import SiloData


@dataclass(frozen=True)
class RoundResult:
    """What one round of local training produced."""

    parameters: list[np.ndarray]
    num_examples: int
    train_loss: float
    steps: int


def model_shape(
    data: DataConfig, found_classes: int | None = None
) -> tuple[int | None, int | None]:
    """Return ``(num_features, num_classes)`` every party of the federation agrees on.

    Built-in and synthetic sets have declared shapes, so the server can build the initial model
    without asking a client; volume data is known only to its silo (``(None, found_classes)``).
    """
    if data.source == "Builtin" and data.builtin is not None:
        return BUILTIN_DATASET_SHAPES[data.builtin.name]
    if data.source == "Synthetic" and data.synthetic is not None:
        return data.synthetic.num_features, data.synthetic.num_classes
    return None, found_classes


def build_model(
    config: ModelConfig,
    num_features: int,
    num_classes: int,
    image_shape: tuple[int, int, int] | None,
    *,
    validate: bool,
    seed: int = 0,
) -> nn.Module:
    """Build the federation's model, seeded so every party starts from the same weights.

    ``validate`` runs Opacus' model check (through the trainer's builder); without DP it is
    skipped so that plain rounds never import Opacus.
    """
    import torch
    from torch import nn

    from ppml_runtime.training import models

    torch.manual_seed(seed)
    if validate or config.architecture == "Custom":
        return models.build_model(config, num_features, num_classes, image_shape)
    if config.architecture == "LogisticRegression":
        return nn.Linear(num_features, num_classes).train()
    if config.architecture == "Mlp":
        return models.build_mlp(num_features, num_classes, config.hidden_units).train()
    if image_shape is None:
        side = math.isqrt(num_features)
        image_shape = (1, side, side)
    return models.build_cnn(num_classes, image_shape).train()


def get_parameters(model: nn.Module) -> list[np.ndarray]:
    """Return the model's state as numpy arrays, in ``state_dict`` order."""
    return [t.detach().cpu().numpy().copy() for t in model.state_dict().values()]


def set_parameters(model: nn.Module, parameters: list[np.ndarray]) -> None:
    """Load numpy arrays (``state_dict`` order) into the model."""
    import torch

    keys = list(model.state_dict().keys())
    if len(keys) != len(parameters):
        raise ValueError(f"model has {len(keys)} tensors but {len(parameters)} arrays arrived")
    model.load_state_dict(
        {k: torch.from_numpy(np.asarray(v).copy()) for k, v in zip(keys, parameters, strict=True)}
    )


def train_plain(
    model: nn.Module,
    data: SiloData,
    training: TrainingParams,
    *,
    proximal_mu: float = 0.0,
    seed: int = 0,
) -> RoundResult:
    """Train ``training.epochs`` local epochs of minibatch SGD/Adam (FedProx when ``mu > 0``)."""
    import torch

    torch.manual_seed(seed)
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    global_params = [p.detach().clone() for p in model.parameters()]
    lr = training.learning_rate_value
    step = _optimizer_step(model, training)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    n, total, steps, count = int(y.shape[0]), 0.0, 0, 0
    for _ in range(training.epochs):
        order = torch.randperm(n)
        for start in range(0, n, training.batch_size):
            idx = order[start : start + training.batch_size]
            model.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            if proximal_mu > 0:
                prox = sum(
                    ((p - g) ** 2).sum()
                    for p, g in zip(model.parameters(), global_params, strict=True)
                )
                loss = loss + proximal_mu / 2 * prox
            loss.backward()
            step(lr)
            total += float(loss.item()) * int(idx.shape[0])
            count += int(idx.shape[0])
            steps += 1
    return RoundResult(get_parameters(model), n, total / max(count, 1), steps)


def _optimizer_step(model: nn.Module, training: TrainingParams) -> Callable[[float], None]:
    """Return a function taking one optimizer step.

    Plain SGD (with momentum) is written out: constructing any ``torch.optim`` optimizer imports
    ``torch._dynamo`` (about 3.5 s here), and every round's ClientApp is a fresh process, so that
    import would be paid on every message. Adam keeps ``torch.optim``.
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if training.optimizer == "Adam":
        opt = torch.optim.Adam(params, lr=training.learning_rate_value)
        return lambda lr: opt.step()
    momentum = training.momentum_value
    buffers: list[torch.Tensor | None] = [None] * len(params)

    def step(lr: float) -> None:
        with torch.no_grad():
            for i, p in enumerate(params):
                if p.grad is None:
                    continue
                grad = p.grad
                if momentum:
                    buf = buffers[i]
                    buf = grad.clone() if buf is None else buf.mul_(momentum).add_(grad)
                    buffers[i] = buf
                    grad = buf
                p.add_(grad, alpha=-lr)

    return step


def evaluate_numpy(
    config: ModelConfig, parameters: list[np.ndarray], data: SiloData
) -> tuple[float, float, int] | None:
    """Evaluate a LogisticRegression or Mlp with numpy alone (no torch import); else ``None``.

    Their state is ``[weight, bias]`` per linear layer, ReLU between layers, so the forward pass
    is a few matrix products. An evaluate message then costs no torch import at all.
    """
    if config.architecture not in ("LogisticRegression", "Mlp") or len(parameters) % 2:
        return None
    h = data.x_test.astype(np.float32, copy=False)
    layers = list(zip(parameters[0::2], parameters[1::2], strict=True))
    for i, (weight, bias) in enumerate(layers):
        h = h @ np.asarray(weight, dtype=np.float32).T + np.asarray(bias, dtype=np.float32)
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    n = int(data.y_test.shape[0])
    if n == 0:
        return math.nan, math.nan, 0
    logits = h.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    loss = float(np.mean(log_norm - shifted[np.arange(n), data.y_test]))
    accuracy = float(np.mean(logits.argmax(axis=1) == data.y_test))
    return loss, accuracy, n




def train_local_dp(
    model: nn.Module,
    data: SiloData,
    training: TrainingParams,
    privacy: PrivacyParams,
    *,
    rounds: int,
    server_round: int,
    steps: int | None = None,
) -> RoundResult:
    """Run this round's share of the silo's DP-SGD steps with the trainer's ``train_private``.

    ``steps`` is the share the silo claimed against its budget
    (:func:`ppml_runtime.federated.silo_budget.claim_round`); without it, the share of
    ``server_round``.
    """
    import torch

    from ppml_runtime.training.dp_sgd import ArrayDataset, DpSgdParams, train_private

    if steps is None:
        steps = steps_in_round(privacy.steps, rounds, server_round)
    params = DpSgdParams(
        noise_multiplier=privacy.noise_multiplier_value,
        sample_rate=privacy.sample_rate_value,
        max_grad_norm=privacy.max_grad_norm_value,
        steps=steps,
        delta=privacy.delta_value,
        learning_rate=training.learning_rate_value,
        optimizer=training.optimizer,
        momentum=training.momentum_value,
        accountant=privacy.accountant,
        grad_sample_mode=privacy.grad_sample_mode,
        seed=training.seed + server_round,
    )
    dataset = ArrayDataset(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train))
    result = train_private(model, cast("Dataset[Any]", dataset), params)
    loss = result.last_loss if result.last_loss is not None else math.nan
    return RoundResult(get_parameters(result.model), int(data.y_train.shape[0]), loss, steps)


def evaluate(model: nn.Module, data: SiloData) -> tuple[float, float, int]:
    """Return ``(loss, accuracy, records)`` on the silo's test split."""
    import torch

    from ppml_runtime.training.dp_sgd import evaluate as evaluate_model

    accuracy, loss = evaluate_model(
        model, torch.from_numpy(data.x_test), torch.from_numpy(data.y_test), "cpu"
    )
    return loss, accuracy, int(data.y_test.shape[0])
