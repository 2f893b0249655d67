"""The operator <-> runtime contract: round trips, validation, the report's 4 KiB bound."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction

import pytest
from pydantic import ValidationError

from ppml_runtime.contract import (
    TERMINATION_MESSAGE_LIMIT,
    ProgressSnapshot,
    TrainerConfig,
    TrainingReport,
    declared_test_records,
    dump_config,
    dump_report,
    exact_decimal_str,
    load_config,
    parse_progress,
    parse_report,
    split_sizes,
    steps_per_epoch,
    total_for_train,
)

from .builders import make_config


def test_config_round_trips_through_json_with_camel_case(tmp_path):
    config = make_config().builtin("Digits", 1437).batch(64).checkpoint("/ckpt").obj()
    path = tmp_path / "config.json"
    path.write_text(dump_config(config))
    raw = json.loads(path.read_text())
    assert raw["data"]["numRecords"] == 1437
    assert raw["privacy"]["sampleRate"] == "0.04453723034098817"
    assert load_config(path) == config


def test_release_round_trips_with_camel_case(tmp_path):
    config = (
        make_config()
        .release(
            modelDir="/output/model",
            metricsNoiseMultiplier="8",
            card={"dataset": "digits", "runtimeImage": "ghcr.io/ppml/runtime:1"},
        )
        .obj()
    )
    raw = json.loads(dump_config(config))
    assert raw["release"] == {
        "modelDir": "/output/model",
        "metricsNoiseMultiplier": "8",
        "lossBound": "10",
        "card": {"dataset": "digits", "runtimeImage": "ghcr.io/ppml/runtime:1"},
    }
    assert TrainerConfig.model_validate(raw) == config
    assert config.release is not None
    assert (config.release.metrics_noise_multiplier_value, config.release.loss_bound_value) == (
        8.0,
        10.0,
    )
    assert make_config().obj().release is None


@pytest.mark.parametrize(
    ("builder", "expected"),
    [
        pytest.param(make_config().builtin("Digits", 1437), 360, id="digits"),
        pytest.param(make_config().synthetic(400), 100, id="synthetic"),
        pytest.param(
            make_config().set(
                "data",
                source="Volume",
                synthetic=None,
                volume={"path": "/d.csv", "format": "Csv"},
                numRecords=4,
            ),
            1,
            id="volume: the smallest set splitting into numRecords",
        ),
    ],
)
def test_declared_test_records(builder, expected):
    raw = builder.dict()
    raw["data"] = {k: v for k, v in raw["data"].items() if v is not None}
    raw["training"]["batchSize"] = 1
    raw["privacy"]["sampleRate"] = exact_decimal_str(Fraction(1, raw["data"]["numRecords"]))
    assert declared_test_records(TrainerConfig.model_validate(raw).data) == expected


def test_config_reads_yaml_too(tmp_path):
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(make_config().dict()))
    assert load_config(path) == make_config().obj()


def test_decimal_values_stay_exact_strings():
    config = make_config().privacy(noiseMultiplier="1.10", delta="1e-5").obj()
    assert config.privacy.noise_multiplier == "1.10"
    assert config.privacy.noise_multiplier_value == 1.1
    assert config.privacy.delta_value == 1e-5
    assert Decimal(config.privacy.sample_rate) == Decimal("0.1")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda b: b.set("data", source="Builtin"),
            "data.builtin is unset",
            id="source without member",
        ),
        pytest.param(
            lambda b: b.set("data", builtin={"name": "Digits"}),
            "data.builtin is set too",
            id="two members",
        ),
        pytest.param(
            lambda b: b.privacy(sampleRate="0.2"),
            "is not training.batchSize",
            id="rate not batch over records",
        ),
        pytest.param(lambda b: b.privacy(delta="1"), "privacy.delta", id="delta of one"),
        pytest.param(
            lambda b: b.privacy(noiseMultiplier="-1"),
            "privacy.noiseMultiplier",
            id="negative noise",
        ),
        pytest.param(lambda b: b.privacy(noiseMultiplier="0"), "must be positive", id="zero noise"),
        pytest.param(
            lambda b: b.privacy(accountant="gdp"), "accountant", id="gdp accountant refused"
        ),
        pytest.param(lambda b: b.set("data", unknown=1), "unknown", id="unknown field"),
        pytest.param(
            lambda b: b.model("Custom"), "model.importPath is unset", id="custom model without path"
        ),
        pytest.param(
            lambda b: b.raw.update(contractVersion=9), "contractVersion 9", id="future contract"
        ),
        pytest.param(
            lambda b: b.release(metricsNoiseMultiplier="0"),
            "release.metricsNoiseMultiplier 0 must be positive",
            id="metric release without noise",
        ),
        pytest.param(
            lambda b: b.release(lossBound="0"),
            "release.lossBound 0 must be positive",
            id="zero loss bound",
        ),
        pytest.param(
            lambda b: b.release(card={"dataset": "d", "epsilon": "0.1"}),
            "release.card sets epsilon, which the runtime writes itself",
            id="card overriding the runtime's figures",
        ),
        pytest.param(lambda b: b.release(modelDir=""), "modelDir", id="empty model dir"),
    ],
)
def test_config_refuses_what_it_cannot_honour(change, message):
    builder = make_config()
    change(builder)
    with pytest.raises(ValidationError, match=message):
        TrainerConfig.model_validate(builder.raw)


@pytest.mark.parametrize(
    ("total", "fraction", "expected"),
    [
        pytest.param(1797, "0.2", (1437, 360), id="digits 80/20"),
        pytest.param(569, "0.25", (426, 143), id="breast cancer rounds the test split up"),
        pytest.param(100, "0", (100, 0), id="no test split"),
    ],
)
def test_split_sizes(total, fraction, expected):
    assert split_sizes(total, fraction) == expected


@pytest.mark.parametrize("train", [1, 7, 200, 1437])
@pytest.mark.parametrize("fraction", ["0", "0.2", "0.33"])
def test_total_for_train_inverts_the_split(train, fraction):
    assert split_sizes(total_for_train(train, fraction), fraction)[0] == train


def test_steps_per_epoch_is_ceil_of_inverse_rate():
    assert steps_per_epoch(Fraction(64, 1437)) == 23
    assert steps_per_epoch(0.25) == 4
    assert steps_per_epoch(1.0) == 1


def test_exact_decimal_str_is_the_double_both_sides_use():
    q = Fraction(64, 1437)
    assert float(exact_decimal_str(q)) == float(q)


def test_report_fits_termination_message_keeping_every_figure():
    report = TrainingReport(
        status="error",
        steps_completed=12,
        epsilon=0.5,
        test_accuracy=0.9,
        released_test_accuracy=0.875,
        model_sha256="0" * 64,
        error="é" * 10_000,
    )
    text = dump_report(report)
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    parsed = parse_report(text)
    assert (parsed.steps_completed, parsed.epsilon, parsed.test_accuracy) == (12, 0.5, 0.9)
    assert (parsed.released_test_accuracy, parsed.model_sha256) == (0.875, "0" * 64)
    assert parsed.error is not None and parsed.error.endswith("…")


def test_full_report_round_trips_well_under_the_limit():
    report = TrainingReport(
        status="ok",
        steps_completed=230,
        epochs=10.0,
        epsilon=4.19,
        delta=1e-5,
        accountant="rdp",
        test_accuracy=0.93,
        test_loss=0.25,
        train_records=1437,
        test_records=360,
        split_seed=0,
        wall_seconds=12.5,
        device="cuda:0 (NVIDIA H200)",
        grad_sample_mode="ghost",
        resumed_from_step=100,
        steps_discarded=3,
        released_test_accuracy=0.9123456789012345,
        released_test_loss=0.2987654321098765,
        model_sha256="ab" * 32,
    )
    text = dump_report(report)
    assert len(text) < 1024
    assert parse_report(text) == report


@pytest.mark.parametrize(
    "text",
    [
        '{"status":"ok","stepsCompleted":10,"epsilon":NaN,"delta":1e-05}',
        '{"status":"ok","stepsCompleted":10,"epsilon":Infinity,"delta":1e-05}',
        '{"status":"ok","stepsCompleted":10,"epsilon":-Infinity,"delta":1e-05}',
        '{"status":"ok","stepsCompleted":10,"epsilon":1.5,"delta":NaN}',
        '{"status":"ok","stepsCompleted":10,"epsilon":1e999,"delta":1e-05}',
        '{"status":"ok","stepsCompleted":10,"releasedTestAccuracy":NaN}',
        '{"status":"ok","stepsCompleted":10,"releasedTestLoss":Infinity}',
    ],
    ids=[
        "epsilon NaN",
        "epsilon infinity",
        "epsilon minus infinity",
        "delta NaN",
        "overflow",
        "released accuracy NaN",
        "released loss infinity",
    ],
)
def test_a_report_with_a_non_finite_figure_is_refused_naming_the_field(text):
    """Python's json writes NaN and Infinity; no comparison orders them, so parsing refuses."""
    with pytest.raises(ValidationError) as refused:
        parse_report(text)
    field = next(
        f
        for f in ("delta", "releasedTestAccuracy", "releasedTestLoss", "epsilon")
        if f'"{f}":' in text and (f != "delta" or '"delta":NaN' in text)
    )
    assert [e["loc"] for e in refused.value.errors()] == [(field,)]
    assert "finite number" in str(refused.value)


def test_a_malformed_model_digest_is_refused():
    with pytest.raises(ValidationError, match="model_sha256"):
        TrainingReport(status="ok", model_sha256="not-a-digest")


def test_progress_parses_prometheus_exposition_from_the_gauges():
    from prometheus_client import generate_latest

    from ppml_runtime.training.metrics import ProgressGauges

    gauges = ProgressGauges(port=0, total_steps=100, steps_per_epoch=10)
    gauges.update(40, 0.75, lambda: 1.25)
    snapshot = parse_progress(generate_latest(gauges.registry).decode())
    assert snapshot == ProgressSnapshot(
        step=40, epoch=4.0, loss=0.75, epsilon=1.25, total_steps=100
    )


def test_contract_and_help_import_no_training_stack():
    code = (
        "import sys, ppml_runtime.contract, ppml_runtime.__main__ as m; "
        "m.build_parser(m.discover_roles()); "
        "heavy = {'torch', 'opacus', 'sklearn', 'kopf'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=180)
