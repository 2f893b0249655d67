"""The DP-SGD training loop, reusable by the trainer role and by a federated ClientApp.

:func:`train_private` runs exactly ``params.steps`` optimizer steps of DP-SGD with Opacus:
Poisson sampling at exactly ``params.sample_rate``, per-sample clipping at ``max_grad_norm``,
Gaussian noise of standard deviation ``noise_multiplier * max_grad_norm``, and the steps recorded
in an Opacus accountant at exactly those parameters.

Why not plain ``PrivacyEngine.make_private``: it derives the sampling rate from the data
loader as ``1 / len(loader)``, i.e. ``1 / int(1 / q)`` for a Poisson loader (1/22 instead of
64/1437 for the digits example), and averages by ``int(N / len(loader))``. Both differ from
what the operator charged. We let ``make_private`` wrap the model and optimizer (ghost clipping
or hooks, with its criterion), hand it a ``DPDataLoader`` built with the exact rate, and then set
the optimizer's expected batch size to ``q * N`` and its accountant hook to the exact ``q``.
:func:`accountant_events` returns what was recorded so callers can check it.

Randomness: ``params.seed`` seeds model initialisation only. The Poisson sampler and the noise
draw from fresh operating-system entropy unless ``noise_seed`` is given (tests, benchmarks): a
seed written in a job spec would make the noise predictable to anyone who can read the spec.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ppml_runtime.contract import TrainerConfig, steps_per_epoch
from ppml_runtime.training.bookkeeping import BookkeepingClipper, supports
from ppml_runtime.training.errors import InvalidConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import Dataset


@dataclass(frozen=True)
class DpSgdParams:
    """The DP-SGD parameters of one training run (the privacy ones exactly as paid for)."""

    noise_multiplier: float
    sample_rate: float
    max_grad_norm: float
    steps: int
    delta: float
    learning_rate: float
    optimizer: str = "Sgd"
    momentum: float = 0.0
    accountant: str = "rdp"
    grad_sample_mode: str = "auto"
    seed: int = 0
    noise_seed: int | None = None

    @classmethod
    def from_config(cls, config: TrainerConfig) -> DpSgdParams:
        """Take the parameters from a trainer config."""
        privacy, training = config.privacy, config.training
        return cls(
            noise_multiplier=privacy.noise_multiplier_value,
            sample_rate=privacy.sample_rate_value,
            max_grad_norm=privacy.max_grad_norm_value,
            steps=privacy.steps,
            delta=privacy.delta_value,
            learning_rate=training.learning_rate_value,
            optimizer=training.optimizer,
            momentum=training.momentum_value,
            accountant=privacy.accountant,
            grad_sample_mode=privacy.grad_sample_mode,
            seed=training.seed,
        )


@dataclass
class ResumeState:
    """What a checkpoint restores; ``steps_spent`` counts every step possibly executed before."""

    steps_spent: int
    model_step: int
    model_state: dict[str, Any] | None = None
    optimizer_state: dict[str, Any] | None = None
    accountant_state: dict[str, Any] | None = None
    torch_rng_state: Any = None


class Checkpointing(Protocol):
    """Where :func:`train_private` reserves steps before taking them and saves its state."""

    every: int

    def reserve(self, steps_upto: int) -> None:
        """Durably record that steps up to ``steps_upto`` may be executed."""

    def save(self, state: ResumeState) -> None:
        """Durably save the state after ``state.steps_spent`` steps."""


#: Called after each step with (steps spent, batch loss or None, a function giving epsilon).
StepCallback = Callable[[int, float | None, Callable[[], float]], None]


@dataclass
class DpSgdResult:
    """The outcome of :func:`train_private`."""

    model: nn.Module
    steps_completed: int
    epsilon: float
    grad_sample_mode: str
    resumed_from_step: int | None
    steps_discarded: int
    last_loss: float | None
    wall_seconds: float
    events: list[tuple[float, float, int]] = field(default_factory=list)

    @property
    def epochs(self) -> float:
        """Poisson epochs completed (``ceil(1/q)`` steps each)."""
        return 0.0 if not self.events else self.steps_completed / steps_per_epoch(self.events[0][1])


class ArrayDataset:
    """A map-style dataset over two tensors that fetches a whole batch in one indexing call."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        if features.shape[0] != labels.shape[0]:
            raise ValueError("features and labels differ in length")
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        """Return the number of records."""
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return one record."""
        return self.features[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return a whole batch (the DataLoader's batched fetch path)."""
        import torch

        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.features[idx], self.labels[idx]


def _batch_collate(batch: Any) -> Any:
    """Pass a batch fetched by ``ArrayDataset.__getitems__`` through unchanged."""
    return batch


def choose_grad_sample_mode(model: nn.Module, requested: str) -> str:
    """Resolve ``auto`` to the fastest clipping mode that trains ``model`` exactly.

    ``auto`` is book-keeping clipping (:mod:`ppml_runtime.training.bookkeeping`, one backward
    pass) for linear models (LogisticRegression, Mlp); per-sample hooks for models with
    convolutions (Opacus' per-sample norms of a convolution cost more than materialising its
    per-sample gradients: hooks 1.9x, ghost 2.6x a plain step on the runtime's CNN) or with a
    reused module or tied parameters (ghost clipping refuses parameter tying); Opacus' ghost
    clipping otherwise.

    Parameters
    ----------
    model
        The model to train.
    requested
        ``ghost``, ``hooks`` or ``auto``.

    """
    from torch import nn

    if requested == "bookkeeping" and not supports(model):
        raise InvalidConfigError(
            "privacy.gradSampleMode bookkeeping needs a Linear model or a Sequential of Linear "
            "and parameter-free layers (LogisticRegression, Mlp)"
        )
    if requested in ("ghost", "hooks", "bookkeeping"):
        return requested
    if requested != "auto":
        raise InvalidConfigError(
            f"privacy.gradSampleMode {requested!r} is not auto, bookkeeping, ghost or hooks"
        )
    if supports(model):
        return "bookkeeping"
    owners: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):  # a reused module counts twice
        if isinstance(module, nn.modules.conv._ConvNd):
            return "hooks"
        for param in module.parameters(recurse=False):
            owners[id(param)] = owners.get(id(param), 0) + 1
    return "hooks" if any(count > 1 for count in owners.values()) else "ghost"


def _generator(seed: int | None, device: torch.device | str) -> torch.Generator:
    import secrets

    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else secrets.randbits(63))
    return gen


def make_poisson_loader(
    data: Dataset[Any],
    sample_rate: float,
    *,
    seed: int | None = None,
    distributed: bool = False,
    pin_memory: bool = False,
) -> Any:
    """Return Opacus' ``DPDataLoader``: each record joins each batch with probability ``q``.

    Parameters
    ----------
    data
        The training records.
    sample_rate
        The Poisson sampling rate ``q`` exactly as paid for.
    seed
        Seed of the sampler; ``None`` draws it from operating-system entropy.
    distributed
        Sample only this worker's shard (each record still with probability ``q``).
    pin_memory
        Pin host memory of the batches (for CUDA).

    """
    from opacus.data_loader import DPDataLoader

    return DPDataLoader(
        data,
        sample_rate=sample_rate,
        generator=_generator(seed, "cpu"),
        distributed=distributed,
        collate_fn=_batch_collate if hasattr(data, "__getitems__") else None,
        pin_memory=pin_memory,
    )


def make_privacy_engine(accountant: str) -> Any:
    """Create an Opacus ``PrivacyEngine`` with the named accountant (``rdp`` or ``prv``)."""
    if accountant not in ("rdp", "prv"):
        raise InvalidConfigError(f"privacy.accountant {accountant!r} is not rdp or prv")
    from opacus import PrivacyEngine

    with warnings.catch_warnings():
        # secure_mode needs torchcsprng, which is not installed; the warning says so each time.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        return PrivacyEngine(accountant=accountant)


def accountant_events(accountant: Any) -> list[tuple[float, float, int]]:
    """Return an Opacus accountant's history as ``(noise_multiplier, sample_rate, steps)``."""
    return [(float(z), float(q), int(n)) for z, q, n in getattr(accountant, "history", [])]


def _optimizer(params: DpSgdParams, parameters: Any) -> torch.optim.Optimizer:
    import torch

    if params.optimizer == "Sgd":
        return torch.optim.SGD(parameters, lr=params.learning_rate, momentum=params.momentum)
    if params.optimizer == "Adam":
        return torch.optim.Adam(parameters, lr=params.learning_rate)
    raise InvalidConfigError(f"training.optimizer {params.optimizer!r} is not Sgd or Adam")


def train_private(
    model: nn.Module,
    data: Dataset[Any],
    params: DpSgdParams,
    *,
    device: str | torch.device = "cpu",
    distributed: bool = False,
    resume: ResumeState | None = None,
    checkpointing: Checkpointing | None = None,
    on_step: StepCallback | None = None,
    amp: bool | None = None,
    pin_memory: bool | None = None,
    criterion: nn.Module | None = None,
) -> DpSgdResult:
    """Train ``model`` with DP-SGD for exactly the steps paid for, never more.

    Parameters
    ----------
    model
        The model (not yet wrapped by Opacus); trained in place and returned unwrapped.
    data
        The training records: a map-style dataset of ``(features, label)``. The sampling rate
        applies to all of it (it must be the ``numRecords`` that was paid for).
    params
        The DP-SGD parameters; ``params.steps`` is the total across all attempts.
    device
        Where to train (``cuda`` uses bf16 autocast when ``amp`` is not ``False``).
    distributed
        Whether a ``torch.distributed`` process group is up; the model is wrapped in Opacus'
        ``DPDDP`` and each worker samples its shard at the same rate.
    resume
        State from a checkpoint; training continues with ``params.steps - resume.steps_spent``
        more steps, and the accountant starts from what was spent (lost steps included).
    checkpointing
        Reserves steps durably before they run and saves the state every ``every`` steps.
    on_step
        Called after each step with the steps spent, the batch loss and an epsilon function.
    amp
        Mixed precision (bf16 autocast); default on for CUDA devices that support bf16.
    pin_memory
        Pin host memory for faster transfers; default on for CUDA.
    criterion
        The loss (mean reduction); cross-entropy by default.

    Returns
    -------
    DpSgdResult
        The trained model, the steps spent and epsilon by the runtime's accountant.

    """
    import torch
    from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP

    started = time.monotonic()
    dev = torch.device(device)
    n_records = len(data)  # type: ignore[arg-type]
    spent = resume.steps_spent if resume else 0
    if spent > params.steps:
        raise InvalidConfigError(
            f"the checkpoint records {spent} steps spent, more than privacy.steps {params.steps}"
        )
    torch.manual_seed(params.seed)
    if resume and resume.model_state is not None:
        model.load_state_dict(resume.model_state)
    base_model = model.to(dev)
    mode = choose_grad_sample_mode(base_model, params.grad_sample_mode)
    if mode == "bookkeeping" and criterion is not None:
        if params.grad_sample_mode != "auto":
            raise InvalidConfigError("book-keeping clipping trains with cross-entropy only")
        mode = "ghost"
    world = torch.distributed.get_world_size() if distributed else 1
    wrapped: nn.Module = DPDDP(base_model) if distributed else base_model

    engine = make_privacy_engine(params.accountant)
    use_cuda = dev.type == "cuda"
    loader = make_poisson_loader(
        data,
        params.sample_rate,
        seed=params.noise_seed,
        distributed=distributed,
        pin_memory=use_cuda if pin_memory is None else pin_memory,
    )
    optimizer = _optimizer(params, base_model.parameters())
    noise_gen = _generator(None if params.noise_seed is None else params.noise_seed + 1, dev)
    loss_fn = criterion if criterion is not None else torch.nn.CrossEntropyLoss()
    clipper: BookkeepingClipper | None = None
    if mode == "bookkeeping":
        from opacus.optimizers import get_optimizer_class

        clipper = BookkeepingClipper(base_model, params.max_grad_norm)
        # Opacus' fast-gradient-clipping optimizer takes p.grad as the clipped sum and adds the
        # noise, the scaling and the accountant step, as after ghost clipping's second pass.
        optimizer_class = get_optimizer_class(
            clipping="flat", distributed=distributed, grad_sample_mode="ghost"
        )
        dp_optimizer = optimizer_class(
            optimizer,
            noise_multiplier=params.noise_multiplier,
            max_grad_norm=params.max_grad_norm,
            expected_batch_size=1,  # set exactly below
            loss_reduction="mean",
            generator=noise_gen,
        )
        dp_model, dp_loader = wrapped, loader
        per_sample_loss = torch.nn.CrossEntropyLoss(reduction="none")
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Secure RNG.*")
            made = engine.make_private(
                module=wrapped,
                optimizer=optimizer,
                criterion=loss_fn,
                data_loader=loader,
                noise_multiplier=params.noise_multiplier,
                max_grad_norm=params.max_grad_norm,
                poisson_sampling=False,  # the loader already samples at exactly sample_rate
                grad_sample_mode=mode,
                noise_generator=noise_gen,
            )
        if mode == "ghost":
            dp_model, dp_optimizer, loss_fn, dp_loader = made
        else:
            dp_model, dp_optimizer, dp_loader = made
        if hasattr(dp_model, "forbid_grad_accumulation"):
            dp_model.forbid_grad_accumulation()
    # The exact paid-for rate, and the mean over the expected (not the realised) batch size.
    dp_optimizer.expected_batch_size = params.sample_rate * n_records / world
    dp_optimizer.attach_step_hook(
        engine.accountant.get_optimizer_hook_fn(sample_rate=params.sample_rate)
    )
    if resume and resume.optimizer_state is not None:
        dp_optimizer.load_state_dict(resume.optimizer_state)
    if resume and resume.accountant_state is not None:
        engine.accountant.load_state_dict(resume.accountant_state)
    if resume and resume.torch_rng_state is not None:
        torch.set_rng_state(resume.torch_rng_state)
    recorded = sum(n for _, _, n in accountant_events(engine.accountant))
    if recorded < spent:
        # Steps taken after the last checkpoint were lost with the pod but were spent all the same.
        engine.accountant.history.append(
            (params.noise_multiplier, params.sample_rate, spent - recorded)
        )
    discarded = spent - (resume.model_step if resume else 0)
    autocast = use_cuda and (amp if amp is not None else torch.cuda.is_bf16_supported())

    def epsilon() -> float:
        if params.noise_multiplier == 0:
            return math.inf  # no noise, no privacy (tests and audits only)
        with warnings.catch_warnings():
            # A valid bound, only looser than a wider order grid would give (large epsilon).
            warnings.filterwarnings("ignore", message="Optimal order is the")
            return float(engine.accountant.get_epsilon(delta=params.delta))

    def save() -> None:
        if checkpointing is not None:
            checkpointing.save(
                ResumeState(
                    steps_spent=spent,
                    model_step=spent - discarded,
                    model_state=base_model.state_dict(),
                    optimizer_state=dp_optimizer.state_dict(),
                    accountant_state=engine.accountant.state_dict(),
                    torch_rng_state=torch.get_rng_state(),
                )
            )

    last_loss: float | None = None
    chunk_end = spent
    dp_model.train()
    with warnings.catch_warnings():
        # Opacus' per-sample hooks are full backward hooks on the first layer, whose input needs
        # no gradient; torch warns about it on every step, harmlessly.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        while spent < params.steps:
            for features, labels in dp_loader:
                if spent >= params.steps:
                    break
                if checkpointing is not None and spent >= chunk_end:
                    chunk_end = min(spent + max(checkpointing.every, 1), params.steps)
                    checkpointing.reserve(chunk_end)
                features = features.to(dev, non_blocking=True)
                labels = labels.to(dev, non_blocking=True)
                dp_optimizer.zero_grad(set_to_none=True)
                if clipper is not None:  # fp32: book-keeping keeps activations for its matmuls
                    losses = per_sample_loss(clipper.forward(features).float(), labels)
                    clipper.backward(losses)
                    loss = losses.detach().mean()
                else:
                    with torch.autocast(
                        device_type=dev.type, dtype=torch.bfloat16, enabled=autocast
                    ):
                        outputs = dp_model(features)
                        loss = loss_fn(outputs.float(), labels)
                    loss.backward()
                dp_optimizer.step()
                spent += 1
                value = float(loss.item()) if labels.shape[0] else math.nan
                last_loss = value if not math.isnan(value) else last_loss
                if on_step is not None:
                    on_step(spent, None if math.isnan(value) else value, epsilon)
                if checkpointing is not None and spent == chunk_end:
                    save()
    if hasattr(dp_model, "cleanup"):
        dp_model.cleanup()  # removes Opacus' hooks and attributes: base_model is plain again
    events = accountant_events(engine.accountant)
    return DpSgdResult(
        model=base_model,
        steps_completed=spent,
        epsilon=epsilon() if spent else 0.0,
        grad_sample_mode=mode,
        resumed_from_step=resume.model_step if resume else None,
        steps_discarded=discarded,
        last_loss=last_loss,
        wall_seconds=time.monotonic() - started,
        events=events,
    )


def evaluate_records(
    model: nn.Module, features: torch.Tensor, labels: torch.Tensor, device: str | torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Return each held-out record's correctness (bool) and cross-entropy loss (float64).

    The per-record figures feed both the exact metrics (owner-side) and the Gaussian release
    (:mod:`ppml_runtime.release.mechanism`), which clips each loss before summing.
    """
    import numpy as np
    import torch

    model.eval()
    hits: list[np.ndarray] = []
    losses: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, int(labels.shape[0]), 1024):
            x = features[start : start + 1024].to(device)
            y = labels[start : start + 1024].to(device)
            logits = model(x).float()
            loss = torch.nn.functional.cross_entropy(logits, y, reduction="none")
            losses.append(loss.double().cpu().numpy())
            hits.append((logits.argmax(dim=1) == y).cpu().numpy())
    model.train()
    if not hits:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=np.float64)
    return np.concatenate(hits), np.concatenate(losses)


def evaluate(
    model: nn.Module, features: torch.Tensor, labels: torch.Tensor, device: str | torch.device
) -> tuple[float, float]:
    """Return ``(accuracy, mean cross-entropy)`` of ``model`` on held-out records (exact)."""
    correct, losses = evaluate_records(model, features, labels, device)
    if correct.shape[0] == 0:
        return math.nan, math.nan
    return float(correct.mean()), float(losses.mean())
