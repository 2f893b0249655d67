"""The delivered model: a flat directory the trainer writes and the analyst loads.

``model.safetensors`` holds the trained module's ``state_dict`` (the plain module's keys, never
an Opacus or DDP wrapper's; contiguous CPU tensors; never pickle, which runs code when
loaded). ``config.json`` (:class:`ModelFileConfig`) says how to rebuild the module with the
runtime's own builders. ``model-card.json`` and ``README.md`` are the model card: provenance and
the privacy guarantee, the released test metrics when there are any, never the exact ones.

The trainer writes the four files into a fresh sibling directory and renames it into place
(:func:`write_model`), so a half-written model never appears under ``release.modelDir``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ppml_runtime.contract import (
    MODEL_CARD_FILE,
    MODEL_CARD_FORMAT,
    MODEL_CARD_RUNTIME_KEYS,
    MODEL_CONFIG_FILE,
    MODEL_FORMAT,
    MODEL_README_FILE,
    MODEL_WEIGHTS_FILE,
    RELEASE_GAUSSIAN_EVENTS,
    Architecture,
    ContractModel,
    ModelConfig,
    TrainerConfig,
)
from ppml_runtime.release.files import fsync_dir, sha256_file
from ppml_runtime.release.mechanism import ReleasedMetrics

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)


class ModelArtifactError(ValueError):
    """A model directory this runtime cannot load (unknown format, missing file)."""


class ModelFileConfig(ContractModel):
    """``config.json`` of a delivered model: what rebuilds the module (``format`` first)."""

    format: str = MODEL_FORMAT
    architecture: Architecture
    hidden_units: list[int] = Field(default_factory=lambda: [128])
    import_path: str | None = None
    num_features: int = Field(ge=1)
    num_classes: int = Field(ge=1)
    image_shape: tuple[int, int, int] | None = None

    def model_config_section(self) -> ModelConfig:
        """Return the contract's ``model`` section this module was built from."""
        return ModelConfig(
            architecture=self.architecture,
            hidden_units=self.hidden_units,
            import_path=self.import_path,
        )


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the plain module inside Opacus' ``GradSampleModule`` and (DP)DDP wrappers."""
    from torch.nn.parallel import DistributedDataParallel

    current = model
    for _ in range(8):  # wrappers nest at most a few deep
        wrapper = isinstance(current, DistributedDataParallel) or type(
            current
        ).__module__.startswith("opacus.")
        inner = getattr(current, "_module", None)
        if inner is None:
            inner = getattr(current, "module", None)
        if not wrapper or inner is None:
            return current
        current = inner
    return current


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return the plain module's ``state_dict`` as contiguous CPU tensors of their own.

    Each tensor is copied: safetensors refuses tensors sharing storage (tied weights), and
    loading assigns every key anyway.
    """
    return {
        key: value.detach().to("cpu").contiguous().clone()
        for key, value in unwrap_model(model).state_dict().items()
    }


def build_card(
    config: TrainerConfig,
    *,
    epsilon: float,
    steps: int,
    train_records: int,
    test_records: int,
    released: ReleasedMetrics | None,
    created: datetime,
) -> dict[str, Any]:
    """Build ``model-card.json``: the operator's static fields and the runtime's own.

    Parameters
    ----------
    config
        The trainer config (its ``release.card`` gives the operator's fields).
    epsilon
        Epsilon by the runtime's own accountant for the steps taken, at ``privacy.delta``.
    steps
        Optimizer steps taken (across attempts).
    train_records
        Records in the training split.
    test_records
        The declared size of the test split the metrics were released on.
    released
        The released test metrics, or ``None``.
    created
        When the model was written (timezone-aware).

    Returns
    -------
    dict
        The card; it never holds the exact test metrics.

    """
    privacy = config.privacy
    release = config.release
    card: dict[str, Any] = {
        "format": MODEL_CARD_FORMAT,
        "job": config.job.name,
        "jobNamespace": config.job.namespace,
    }
    card.update(release.card if release is not None else {})
    card.update(
        architecture=config.model.architecture,
        trainRecords=train_records,
        epsilon=epsilon,
        chargedEpsilon=privacy.charged_epsilon,
        delta=privacy.delta,
        accountant=privacy.accountant,
        steps=steps,
        noiseMultiplier=privacy.noise_multiplier,
        maxGradNorm=privacy.max_grad_norm,
        sampleRate=privacy.sample_rate,
    )
    if release is not None and release.metrics_noise_multiplier is not None:
        card["metricsRelease"] = {
            "mechanism": "Gaussian",
            "noiseMultiplier": release.metrics_noise_multiplier,
            "lossBound": release.loss_bound,
            "gaussianEvents": RELEASE_GAUSSIAN_EVENTS,
            "testRecords": test_records,
        }
    if released is not None:
        card["releasedTestAccuracy"] = released.accuracy
        card["releasedTestLoss"] = released.loss
    card["created"] = created.isoformat()
    return card


_LABELS = {
    "dataset": "Data set",
    "budget": "Privacy budget",
    "runtimeImage": "Runtime image",
    "runtimeImageDigest": "Runtime image digest",
}


def _cell(value: object) -> str:
    text = "—" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[tuple[str, object]]) -> list[str]:
    """Return a two-column Markdown table of ``(label, value)`` rows (the model cards')."""
    return ["| | |", "|---|---|", *(f"| {k} | {_cell(v)} |" for k, v in rows)]


def render_readme(card: dict[str, Any]) -> str:
    """Render the model card as Markdown for people (``README.md``)."""
    operator_fields = [
        (_LABELS.get(key, key), value)
        for key, value in card.items()
        if key not in MODEL_CARD_RUNTIME_KEYS
    ]
    lines = [
        f"# Model card: {card['jobNamespace']}/{card['job']}",
        "",
        "A model trained with differentially private SGD (DP-SGD with Opacus) by ppml-operator, "
        "in the data owner's namespace. The weights are a differentially private result: "
        f"the (ε, δ) below bounds what they reveal about any one of the {card['trainRecords']} "
        "training records.",
        "",
        *markdown_table(
            [
                ("Job", f"{card['jobNamespace']}/{card['job']}"),
                *operator_fields,
                ("Architecture", card["architecture"]),
                ("Training records", card["trainRecords"]),
                ("Created", card["created"]),
                ("model.safetensors SHA-256", card.get("modelSha256")),
            ]
        ),
        "",
        "## Privacy",
        "",
        *markdown_table(
            [
                ("ε (the runtime's own accountant, for the steps taken)", f"{card['epsilon']:.6g}"),
                ("ε charged to the budget for training", card["chargedEpsilon"]),
                ("δ", card["delta"]),
                ("Accountant", card["accountant"]),
                ("Steps", card["steps"]),
                ("Noise multiplier", card["noiseMultiplier"]),
                ("Clipping norm (maxGradNorm)", card["maxGradNorm"]),
                ("Sampling rate (Poisson)", card["sampleRate"]),
            ]
        ),
        "",
        "## Test metrics",
        "",
    ]
    release = card.get("metricsRelease")
    if release is None:
        lines.append("No test metric was released.")
    else:
        lines += [
            f"Released through {release['gaussianEvents']} Gaussian mechanisms with noise "
            f"multiplier {release['noiseMultiplier']}, charged to the budget: the sum of correct "
            "predictions (sensitivity 1) and the sum of per-record losses clipped to "
            f"[0, {release['lossBound']}] (sensitivity {release['lossBound']}), each divided by "
            f"the {release['testRecords']} declared test records. The figures are noisy; the "
            "exact ones never leave the data owner.",
            "",
            *markdown_table(
                [
                    ("Released test accuracy", _fmt(card.get("releasedTestAccuracy"))),
                    ("Released test loss", _fmt(card.get("releasedTestLoss"))),
                ]
            ),
        ]
    lines += ["", *LOADING_SECTION]
    return "\n".join(lines)


LOADING_SECTION = (
    "## Loading",
    "",
    "`ppml_runtime.release.artifact.load_model(directory)` rebuilds the module from "
    "`config.json` and loads `model.safetensors`; "
    "`python -m ppml_runtime evaluate-model --model DIR --builtin NAME` measures it on a "
    "built-in data set's test split.",
    "",
)
"""The model card README's last section, the same for a trainer's and a federation's model."""


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else _cell(value)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _install(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; a model already there is moved aside, then removed."""
    old: Path | None = None
    if target.exists() or target.is_symlink():
        old = target.parent / f".{target.name}.old-{os.getpid()}-{time.time_ns()}"
        os.rename(target, old)
        logger.info("Replaced the model already at %s", target)
    os.rename(staging, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_model(
    directory: str | Path,
    model: nn.Module,
    file_config: ModelFileConfig,
    card: dict[str, Any],
    readme: Callable[[dict[str, Any]], str] | None = None,
) -> str:
    """Write a model directory atomically and return the SHA-256 of ``model.safetensors``.

    Parameters
    ----------
    directory
        Where the model appears (its parent is created when missing).
    model
        The trained module, wrapped or not.
    file_config
        What ``config.json`` holds.
    card
        The model card (:func:`build_card`); ``modelSha256`` is added to it.
    readme
        Renders ``README.md`` from the card (default :func:`render_readme`, a DP-SGD
        trainer's; a federation's final model has its own).

    Returns
    -------
    str
        The hex SHA-256 of ``model.safetensors``.

    """
    from safetensors.torch import save_file

    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        staging.chmod(0o755)  # the serving pod may run as another user
        save_file(
            state_tensors(model), str(staging / MODEL_WEIGHTS_FILE), metadata={"format": "pt"}
        )
        with open(staging / MODEL_WEIGHTS_FILE, "rb+") as fh:
            os.fsync(fh.fileno())
        digest = sha256_file(staging / MODEL_WEIGHTS_FILE)
        full_card = {**card, "modelSha256": digest}
        config_json = file_config.model_dump_json(by_alias=True, exclude_none=True, indent=2)
        _write(staging / MODEL_CONFIG_FILE, (config_json + "\n").encode())
        _write(staging / MODEL_CARD_FILE, (json.dumps(full_card, indent=2) + "\n").encode())
        _write(staging / MODEL_README_FILE, (readme or render_readme)(full_card).encode())
        for name in (MODEL_WEIGHTS_FILE, MODEL_CONFIG_FILE, MODEL_CARD_FILE, MODEL_README_FILE):
            (staging / name).chmod(0o644)
        fsync_dir(staging)
        _install(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Wrote the model to %s (sha256 %s)", target, digest)
    return digest


def read_file_config(directory: str | Path) -> ModelFileConfig:
    """Read and check a model directory's ``config.json``.

    Raises
    ------
    ModelArtifactError
        When the file is missing, not JSON, or of another format.

    """
    path = Path(directory) / MODEL_CONFIG_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelArtifactError(f"{path} cannot be read as JSON: {err}") from err
    found = raw.get("format") if isinstance(raw, dict) else None
    if found != MODEL_FORMAT:
        raise ModelArtifactError(f"{path} has format {found!r}, not {MODEL_FORMAT!r}")
    return ModelFileConfig.model_validate(raw)


def load_model(path: str | Path) -> nn.Module:
    """Rebuild a delivered model from its directory, in evaluation mode.

    Parameters
    ----------
    path
        The model directory (or its ``model.safetensors``). A ``Custom`` architecture imports
        ``importPath``, which must be installed where the model is loaded.

    Returns
    -------
    torch.nn.Module
        The module with the delivered weights (every key must match).

    Raises
    ------
    ModelArtifactError
        When the directory is not a delivered model this runtime can load.

    """
    from safetensors.torch import load_file

    from ppml_runtime.training.models import build_model

    base = Path(path)
    if base.name == MODEL_WEIGHTS_FILE:
        base = base.parent
    file_config = read_file_config(base)
    weights = base / MODEL_WEIGHTS_FILE
    if not weights.is_file():
        raise ModelArtifactError(f"{weights} is missing")
    model = build_model(
        file_config.model_config_section(),
        file_config.num_features,
        file_config.num_classes,
        file_config.image_shape,
        check=False,
    )
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as err:
        raise ModelArtifactError(
            f"{weights} does not fit the module of {MODEL_CONFIG_FILE}: {str(err).splitlines()[0]}"
        ) from err
    return model.eval()


def deliver_model(
    config: TrainerConfig,
    model: nn.Module,
    *,
    num_features: int,
    num_classes: int,
    image_shape: tuple[int, int, int] | None,
    card: dict[str, Any],
) -> str | None:
    """Write the trained model to ``release.modelDir`` when set; return its SHA-256 or ``None``."""
    release = config.release
    if release is None or release.model_dir is None:
        return None
    file_config = ModelFileConfig(
        architecture=config.model.architecture,
        hidden_units=config.model.hidden_units,
        import_path=config.model.import_path if config.model.architecture == "Custom" else None,
        num_features=num_features,
        num_classes=num_classes,
        image_shape=image_shape,
    )
    return write_model(release.model_dir, model, file_config, card)
