"""Models: built-in architectures are Opacus-compatible; user models are validated by name."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from ppml_runtime.contract import ModelConfig
from ppml_runtime.training.errors import InvalidConfigError
from ppml_runtime.training.models import build_model


@pytest.mark.parametrize(
    ("architecture", "features", "image"),
    [
        pytest.param("LogisticRegression", 30, None, id="logistic regression"),
        pytest.param("Mlp", 64, None, id="mlp"),
        pytest.param("Cnn", 64, (1, 8, 8), id="cnn on digits"),
        pytest.param("Cnn", 784, (1, 28, 28), id="cnn on mnist"),
        pytest.param("Cnn", 49, None, id="cnn on a square feature vector"),
    ],
)
def test_builtin_models_map_features_to_logits(architecture, features, image):
    model = build_model(ModelConfig(architecture=architecture), features, 10, image)
    assert model(torch.zeros(3, features)).shape == (3, 10)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_cnn_refuses_non_image_records():
    with pytest.raises(InvalidConfigError, match="not a square image"):
        build_model(ModelConfig(architecture="Cnn"), 30, 2)


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    (tmp_path / "user_models_for_test.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def good(num_features, num_classes):
                return nn.Sequential(
                    nn.Linear(num_features, 16), nn.Tanh(), nn.Linear(16, num_classes)
                )

            def batchnorm(num_features, num_classes):
                return nn.Sequential(
                    nn.Linear(num_features, 16), nn.BatchNorm1d(16), nn.Linear(16, num_classes)
                )

            def not_a_module(num_features, num_classes):
                return 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_models_for_test"
    sys.modules.pop("user_models_for_test", None)


def test_custom_model_is_loaded_by_import_path(user_models):
    model = build_model(ModelConfig(architecture="Custom", importPath=f"{user_models}:good"), 5, 3)
    assert model(torch.zeros(2, 5)).shape == (2, 3)


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        pytest.param("batchnorm", r"layer 1 \(BatchNorm1d\)", id="batchnorm named by layer"),
        pytest.param("not_a_module", "not a torch.nn.Module", id="factory returns something else"),
        pytest.param("missing", "is not a callable", id="no such factory"),
    ],
)
def test_custom_model_errors_are_clear(user_models, attr, message):
    config = ModelConfig(architecture="Custom", importPath=f"{user_models}:{attr}")
    with pytest.raises(InvalidConfigError, match=message):
        build_model(config, 5, 3)


def test_custom_model_module_that_does_not_import():
    config = ModelConfig(architecture="Custom", importPath="no_such_package_xyz.models:build")
    with pytest.raises(InvalidConfigError, match="cannot be imported"):
        build_model(config, 5, 3)
