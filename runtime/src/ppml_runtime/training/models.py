"""Models the trainer builds: logistic regression, an MLP, a small CNN, or a user's model.

Every model takes a batch of flat feature vectors ``(B, F)`` and returns class logits
``(B, K)``. The CNN reshapes the vector to an image itself. All built-in models are
Opacus-compatible (GroupNorm, never BatchNorm); a user's model is checked with Opacus'
``ModuleValidator`` and refused with a message naming the offending layer.
"""

from __future__ import annotations

import importlib
import math
from typing import TYPE_CHECKING, Any

from ppml_runtime.contract import ModelConfig
from ppml_runtime.training.errors import InvalidConfigError

if TYPE_CHECKING:
    from torch import nn


def _groups(channels: int) -> int:
    return math.gcd(channels, 8) or 1


def build_cnn(num_classes: int, image_shape: tuple[int, int, int], width: int = 16) -> nn.Module:
    """Build a small CNN: two conv blocks (GroupNorm, ReLU, pooling) and a linear head.

    Parameters
    ----------
    num_classes
        Number of output classes.
    image_shape
        ``(channels, height, width)`` of one record.
    width
        Channels of the first convolution (the second has twice as many).

    """
    from torch import nn

    channels, height, wide = image_shape
    pooled = (2, 2) if min(height, wide) < 16 else (4, 4)
    return nn.Sequential(
        nn.Unflatten(1, image_shape),
        nn.Conv2d(channels, width, kernel_size=3, padding=1),
        nn.GroupNorm(_groups(width), width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, kernel_size=3, padding=1),
        nn.GroupNorm(_groups(2 * width), 2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(pooled),
        nn.Flatten(),
        nn.Linear(2 * width * pooled[0] * pooled[1], num_classes),
    )


def build_mlp(num_features: int, num_classes: int, hidden_units: list[int]) -> nn.Module:
    """Build a ReLU multi-layer perceptron ``F -> hidden... -> K``."""
    from torch import nn

    layers: list[nn.Module] = []
    width = num_features
    for units in hidden_units:
        layers += [nn.Linear(width, units), nn.ReLU()]
        width = units
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _load_custom(import_path: str, num_features: int, num_classes: int) -> Any:
    module_name, _, attr = import_path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InvalidConfigError(
            f"model.importPath {import_path}: module {module_name} cannot be imported ({err})"
        ) from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InvalidConfigError(f"model.importPath {import_path}: {attr} is not a callable")
    return factory(num_features=num_features, num_classes=num_classes)


def validate_model(model: nn.Module, where: str) -> None:
    """Refuse a model Opacus cannot train privately, naming each unsupported layer.

    Raises
    ------
    InvalidConfigError
        When ``ModuleValidator`` finds a layer DP-SGD cannot handle (e.g. BatchNorm).

    """
    from opacus.validators import ModuleValidator

    problems: list[str] = []
    for name, layer in model.named_modules():
        check = ModuleValidator.VALIDATORS.get(type(layer))
        for error in check(layer) if check else []:
            first = str(error).split(". ")[0].rstrip(".")
            problems.append(f"layer {name or '<root>'} ({type(layer).__name__}): {first}")
    if not problems:  # whole-model checks (e.g. no trainable parameters)
        problems = [str(e).split(". ")[0] for e in ModuleValidator.validate(model, strict=False)]
    if problems:
        raise InvalidConfigError(
            f"{where} cannot be trained with DP-SGD: {'; '.join(problems[:5])}. Replace "
            "BatchNorm with GroupNorm (or LayerNorm) and avoid layers that mix the records of "
            "a batch"
        )


def build_model(
    config: ModelConfig,
    num_features: int,
    num_classes: int,
    image_shape: tuple[int, int, int] | None = None,
    *,
    check: bool = True,
) -> nn.Module:
    """Build the model a config asks for and check that DP-SGD can train it.

    Parameters
    ----------
    config
        The contract's ``model`` section.
    num_features
        Features per record.
    num_classes
        Number of classes.
    image_shape
        ``(C, H, W)`` of an image record; the CNN needs it, or a square feature count.
    check
        Whether to check with Opacus that DP-SGD can train the model; rebuilding a delivered
        model for inference skips it (and the cost of importing Opacus).

    Returns
    -------
    torch.nn.Module
        The model, on the CPU, in training mode.

    """
    from torch import nn

    arch = config.architecture
    if arch == "LogisticRegression":
        model: nn.Module = nn.Linear(num_features, num_classes)
    elif arch == "Mlp":
        model = build_mlp(num_features, num_classes, config.hidden_units)
    elif arch == "Cnn":
        if image_shape is None:
            side = math.isqrt(num_features)
            if side * side != num_features:
                raise InvalidConfigError(
                    f"model.architecture Cnn needs image records; {num_features} features are "
                    "not a square image"
                )
            image_shape = (1, side, side)
        model = build_cnn(num_classes, image_shape)
    else:
        built = _load_custom(config.import_path or "", num_features, num_classes)
        if not isinstance(built, nn.Module):
            raise InvalidConfigError(
                f"model.importPath {config.import_path} returned {type(built).__name__}, "
                "not a torch.nn.Module"
            )
        model = built
    if check:
        where = f"model {arch}" + (f" {config.import_path}" if arch == "Custom" else "")
        validate_model(model, where)
    return model.train()
