"""The delivered model: written atomically, loaded back identical, carded without exact metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import torch

from ppml_runtime.__main__ import main
from ppml_runtime.contract import MODEL_FILES, ModelConfig
from ppml_runtime.release import artifact
from ppml_runtime.release.artifact import (
    ModelArtifactError,
    ModelFileConfig,
    build_card,
    load_model,
    state_tensors,
    write_model,
)
from ppml_runtime.release.files import sha256_file
from ppml_runtime.release.mechanism import ReleasedMetrics
from ppml_runtime.training.models import build_model

from .builders import make_config

CREATED = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)


def built(
    architecture: str, features: int, classes: int, **extra
) -> tuple[torch.nn.Module, ModelFileConfig]:
    torch.manual_seed(3)
    section = ModelConfig(architecture=architecture, **extra)
    model = build_model(section, features, classes, check=False)
    file_config = ModelFileConfig(
        architecture=architecture,
        hidden_units=section.hidden_units,
        num_features=features,
        num_classes=classes,
    )
    return model, file_config


def card_of(config, released=None) -> dict:
    return build_card(
        config,
        epsilon=0.93,
        steps=10,
        train_records=200,
        test_records=50,
        released=released,
        created=CREATED,
    )


@pytest.mark.parametrize(
    ("architecture", "features", "extra"),
    [
        pytest.param("LogisticRegression", 8, {}, id="logistic regression"),
        pytest.param("Mlp", 8, {"hiddenUnits": [16, 8]}, id="mlp"),
        pytest.param("Cnn", 64, {}, id="cnn on 8x8 images"),
    ],
)
def test_load_model_rebuilds_the_same_function(tmp_path, architecture, features, extra):
    model, file_config = built(architecture, features, 3, **extra)
    digest = write_model(tmp_path / "model", model, file_config, card_of(make_config().obj()))
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted(MODEL_FILES)
    assert digest == sha256_file(tmp_path / "model" / "model.safetensors")
    loaded = load_model(tmp_path / "model")
    assert not loaded.training
    x = torch.randn(5, features)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_weights_are_the_plain_modules_keys_even_when_wrapped():
    from opacus import GradSampleModule

    model, _ = built("Mlp", 8, 2, hiddenUnits=[4])
    plain = set(model.state_dict())
    assert (
        set(state_tensors(GradSampleModule(model)))
        == plain
        == {
            "0.weight",
            "0.bias",
            "2.weight",
            "2.bias",
        }
    )
    assert all(t.is_contiguous() and t.device.type == "cpu" for t in state_tensors(model).values())


def test_config_json_says_how_to_rebuild(tmp_path):
    model, file_config = built("Mlp", 8, 2, hiddenUnits=[4])
    write_model(tmp_path / "m", model, file_config, card_of(make_config().obj()))
    assert json.loads((tmp_path / "m" / "config.json").read_text()) == {
        "format": "ppml.dev/model-v1",
        "architecture": "Mlp",
        "hiddenUnits": [4],
        "numFeatures": 8,
        "numClasses": 2,
    }


def test_a_model_already_there_is_replaced_whole(tmp_path):
    model, file_config = built("LogisticRegression", 8, 2)
    write_model(tmp_path / "m", model, file_config, card_of(make_config().obj()))
    with torch.no_grad():
        model.weight.add_(1.0)
    second = write_model(tmp_path / "m", model, file_config, card_of(make_config().obj()))
    assert sha256_file(tmp_path / "m" / "model.safetensors") == second
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    model, file_config = built("LogisticRegression", 8, 2)

    def broken(card):
        raise OSError("disk full")

    monkeypatch.setattr(artifact, "render_readme", broken)
    with pytest.raises(OSError, match="disk full"):
        write_model(tmp_path / "out" / "m", model, file_config, card_of(make_config().obj()))
    assert list((tmp_path / "out").iterdir()) == []


def test_the_card_holds_provenance_and_released_metrics_never_exact_ones(tmp_path):
    config = (
        make_config()
        .release(
            modelDir=str(tmp_path / "m"),
            metricsNoiseMultiplier="4",
            lossBound="5",
            card={
                "dataset": "digits",
                "budget": "clinic/digits-budget",
                "runtimeImage": "ghcr.io/ppml/runtime:1",
                "runtimeImageDigest": "sha256:" + "a" * 64,
            },
        )
        .obj()
    )
    card = card_of(config, ReleasedMetrics(accuracy=0.8125, loss=0.5))
    model, file_config = built("LogisticRegression", 8, 2)
    digest = write_model(tmp_path / "m", model, file_config, card)
    written = json.loads((tmp_path / "m" / "model-card.json").read_text())
    assert written == {
        "format": "ppml.dev/model-card-v1",
        "job": "unit",
        "jobNamespace": "default",
        "dataset": "digits",
        "budget": "clinic/digits-budget",
        "runtimeImage": "ghcr.io/ppml/runtime:1",
        "runtimeImageDigest": "sha256:" + "a" * 64,
        "architecture": "LogisticRegression",
        "trainRecords": 200,
        "epsilon": 0.93,
        "chargedEpsilon": "10",
        "delta": "1e-5",
        "accountant": "rdp",
        "steps": 10,
        "noiseMultiplier": "1.0",
        "maxGradNorm": "1.0",
        "sampleRate": "0.1",
        "metricsRelease": {
            "mechanism": "Gaussian",
            "noiseMultiplier": "4",
            "lossBound": "5",
            "gaussianEvents": 2,
            "testRecords": 50,
        },
        "releasedTestAccuracy": 0.8125,
        "releasedTestLoss": 0.5,
        "created": "2026-11-03T12:00:00+00:00",
        "modelSha256": digest,
    }
    readme = (tmp_path / "m" / "README.md").read_text()
    for text in ("digits", "clinic/digits-budget", "ghcr.io/ppml/runtime:1", "0.8125", digest):
        assert text in readme
    assert "Gaussian mechanisms with noise multiplier 4" in readme


def test_a_card_without_a_metric_release_says_so(tmp_path):
    model, file_config = built("LogisticRegression", 8, 2)
    write_model(tmp_path / "m", model, file_config, card_of(make_config().obj()))
    card = json.loads((tmp_path / "m" / "model-card.json").read_text())
    assert "metricsRelease" not in card and "releasedTestAccuracy" not in card
    assert "No test metric was released." in (tmp_path / "m" / "README.md").read_text()


def test_load_model_refuses_another_format(tmp_path):
    model, file_config = built("LogisticRegression", 8, 2)
    write_model(tmp_path / "m", model, file_config, card_of(make_config().obj()))
    (tmp_path / "m" / "config.json").write_text(json.dumps({"format": "other/v9"}))
    with pytest.raises(ModelArtifactError, match="format 'other/v9'"):
        load_model(tmp_path / "m")


def test_load_model_refuses_weights_of_another_module(tmp_path):
    model, file_config = built("LogisticRegression", 8, 2)
    write_model(tmp_path / "m", model, file_config, card_of(make_config().obj()))
    other = file_config.model_copy(update={"num_classes": 3})
    (tmp_path / "m" / "config.json").write_text(other.model_dump_json(by_alias=True))
    with pytest.raises(ModelArtifactError, match="does not fit"):
        load_model(tmp_path / "m")


def test_evaluate_model_measures_the_trainers_test_split(tmp_path, capsys):
    from ppml_runtime.training.data import load_builtin, split_records
    from ppml_runtime.training.dp_sgd import evaluate

    model, file_config = built("LogisticRegression", 64, 10)
    write_model(tmp_path / "m", model, file_config, card_of(make_config().obj()))
    argv = ["evaluate-model", "--model", str(tmp_path / "m"), "--builtin", "Digits"]
    assert main([*argv, "--split-seed", "7"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1
    result = json.loads(printed[0])
    split = split_records(load_builtin("Digits"), "0.2", 7)
    expected, _ = evaluate(
        model, torch.from_numpy(split.x_test), torch.from_numpy(split.y_test), "cpu"
    )
    assert result == {"accuracy": pytest.approx(expected), "records": 360}


def test_evaluate_model_refuses_a_data_set_of_other_features(tmp_path, caplog):
    model, file_config = built("LogisticRegression", 8, 2)
    write_model(tmp_path / "m", model, file_config, card_of(make_config().obj()))
    assert main(["evaluate-model", "--model", str(tmp_path / "m"), "--builtin", "Iris"]) == 1
    assert "takes 8 features; Iris records have 4" in caplog.text
