"""The trainer role end to end: reports, exit codes, metrics, checkpoints and DDP on gloo."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from decimal import Decimal

import pytest

from ppml_runtime.contract import (
    ENV_TERMINATION_MESSAGE_PATH,
    EXIT_DATA_MISMATCH,
    EXIT_INVALID_CONFIG,
    parse_progress,
    parse_report,
)
from ppml_runtime.training.trainer import run_trainer

from .builders import make_config


@pytest.fixture
def report_path(tmp_path, monkeypatch):
    path = tmp_path / "termination-log"
    monkeypatch.setenv(ENV_TERMINATION_MESSAGE_PATH, str(path))
    return path


def charged(builder) -> str:
    """What the operator would charge for this config (its own accountant, not ours)."""
    from ppml_operator.privacy.accountant import epsilon_of
    from ppml_operator.privacy.events import DpSgdEvent

    privacy = builder.raw["privacy"]
    event = DpSgdEvent(
        Decimal(privacy["noiseMultiplier"]), Decimal(privacy["sampleRate"]), privacy["steps"]
    )
    return str(epsilon_of(event, privacy["delta"], "RDP"))


def run(builder, tmp_path) -> int:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(builder.raw))
    return run_trainer(str(path))


def test_trains_and_reports_within_the_charge(tmp_path, report_path):
    builder = make_config().synthetic(400, features=8, classes=2).batch(40).steps(30)
    builder.privacy(chargedEpsilon=charged(builder))
    assert run(builder, tmp_path) == 0
    report = parse_report(report_path.read_text())
    assert report.status == "ok"
    assert report.steps_completed == 30
    assert report.epochs == pytest.approx(3.0)
    assert report.epsilon <= float(builder.raw["privacy"]["chargedEpsilon"])
    assert report.epsilon == pytest.approx(
        float(builder.raw["privacy"]["chargedEpsilon"]), rel=2e-3
    )
    assert report.test_accuracy > 0.8  # well-separated blobs; chance is 0.5
    assert (report.train_records, report.test_records, report.split_seed) == (400, 100, 0)
    assert report.device == "cpu" and report.grad_sample_mode == "bookkeeping"


def test_cnn_on_builtin_digits(tmp_path, report_path):
    builder = make_config().builtin("Digits", 1437).batch(64).model("Cnn").steps(4)
    assert run(builder, tmp_path) == 0
    report = parse_report(report_path.read_text())
    assert (report.steps_completed, report.test_records) == (4, 360)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda b: b.privacy(chargedEpsilon="0.5"),
            "chargedEpsilon 0.5 is below",
            id="charge too low",
        ),
        pytest.param(
            lambda b: b.set("distributed", workers=2), "RANK and", id="workers without a rendezvous"
        ),
        pytest.param(
            lambda b: b.model("Custom", importPath="no_such_module_xyz:build"),
            "cannot be imported",
            id="user model missing",
        ),
        pytest.param(lambda b: b.privacy(steps=0), "steps", id="zero steps"),
        pytest.param(
            lambda b: b.set(
                "data",
                source="Volume",
                volume={"path": "/no/such.csv", "format": "Csv"},
                synthetic=None,
            ),
            "is not a file",
            id="volume file missing",
        ),
    ],
)
def test_config_it_cannot_honour_exits_2_without_training(
    tmp_path, report_path, change, message, monkeypatch
):
    monkeypatch.delenv("RANK", raising=False)
    builder = make_config()
    change(builder)
    assert run(builder, tmp_path) == EXIT_INVALID_CONFIG
    report = parse_report(report_path.read_text())
    assert report.status == "error" and message in report.error
    assert report.steps_completed == 0


def test_record_count_mismatch_exits_3(tmp_path, report_path):
    builder = make_config().builtin("Digits", 1797).batch(64)  # whole set, not the training split
    assert run(builder, tmp_path) == EXIT_DATA_MISMATCH
    report = parse_report(report_path.read_text())
    assert "numRecords is 1797" in report.error and "1437" in report.error


def test_cli_exits_2_on_an_unreadable_config(tmp_path):
    (tmp_path / "bad.json").write_text('{"job": {"name": "x"}}')
    env = os.environ | {ENV_TERMINATION_MESSAGE_PATH: str(tmp_path / "term")}
    for config in (tmp_path / "bad.json", tmp_path / "missing.json"):
        proc = subprocess.run(
            [sys.executable, "-m", "ppml_runtime", "train", "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == EXIT_INVALID_CONFIG, proc.stderr
        assert parse_report((tmp_path / "term").read_text()).status == "error"


def test_checkpointed_job_restarted_after_completion_spends_nothing_more(tmp_path, report_path):
    builder = make_config().synthetic(200).batch(20).steps(12).checkpoint(str(tmp_path / "ckpt"))
    assert run(builder, tmp_path) == 0
    assert run(builder, tmp_path) == 0
    report = parse_report(report_path.read_text())
    assert report.steps_completed == 12 and report.resumed_from_step == 12


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_metrics_endpoint_serves_progress():
    from ppml_runtime.training.metrics import ProgressGauges

    port = free_port()
    gauges = ProgressGauges(port=port, total_steps=50, steps_per_epoch=5)
    try:
        gauges.update(10, 0.5, lambda: 0.25)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            snapshot = parse_progress(resp.read().decode())
    finally:
        gauges.close()
    assert (snapshot.step, snapshot.epoch, snapshot.total_steps) == (10, 2.0, 50)
    assert (snapshot.loss, snapshot.epsilon) == (0.5, 0.25)


def test_two_workers_train_with_dpddp_on_gloo(tmp_path):
    builder = make_config().synthetic(200).batch(20).steps(6).set("distributed", workers=2)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(builder.raw))
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = os.environ | {
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            ENV_TERMINATION_MESSAGE_PATH: str(tmp_path / f"term-{rank}"),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "ppml_runtime", "train", "--config", str(config)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    reports = [parse_report((tmp_path / f"term-{r}").read_text()) for r in range(2)]
    assert [r.steps_completed for r in reports] == [6, 6]
    assert reports[0].epsilon == pytest.approx(reports[1].epsilon)
    assert reports[0].test_accuracy == pytest.approx(reports[1].test_accuracy)  # same weights


def test_release_writes_the_model_and_noisy_metrics_only(tmp_path, report_path):
    from ppml_runtime.release.artifact import load_model
    from ppml_runtime.release.files import sha256_file

    model_dir = tmp_path / "output" / "model"
    builder = (
        make_config()
        .synthetic(400, features=8, classes=2)
        .batch(40)
        .steps(10)
        .release(
            modelDir=str(model_dir),
            metricsNoiseMultiplier="1",
            lossBound="4",
            card={"dataset": "blobs", "runtimeImage": "ghcr.io/ppml/runtime:1"},
        )
    )
    assert run(builder, tmp_path) == 0
    report = parse_report(report_path.read_text())
    assert report.status == "ok" and report.test_records == 100
    # sigma / n = 0.01 for the accuracy, sigma * B / n = 0.04 for the loss: 10 std apart at most.
    assert abs(report.released_test_accuracy - report.test_accuracy) < 0.1
    assert abs(report.released_test_loss - min(report.test_loss, 4.0)) < 0.4
    assert report.model_sha256 == sha256_file(model_dir / "model.safetensors")
    assert [p.name for p in model_dir.parent.iterdir()] == ["model"]
    card_text = (model_dir / "model-card.json").read_text()
    card = json.loads(card_text)
    assert card["releasedTestAccuracy"] == report.released_test_accuracy
    assert (card["epsilon"], card["steps"], card["trainRecords"]) == (report.epsilon, 10, 400)
    assert (card["dataset"], card["modelSha256"]) == ("blobs", report.model_sha256)
    # The exact figures never reach the card (the README is rendered from it).
    assert not {"testAccuracy", "testLoss"} & set(card)
    figures = [v for v in card.values() if isinstance(v, float)]
    assert report.test_accuracy not in figures and report.test_loss not in figures
    assert load_model(model_dir)(__import__("torch").zeros(3, 8)).shape == (3, 2)


def test_without_a_release_nothing_is_released(tmp_path, report_path):
    builder = make_config().synthetic(200).steps(3).release(modelDir=None)
    assert run(builder, tmp_path) == 0
    report = parse_report(report_path.read_text())
    assert report.test_accuracy is not None
    assert (report.released_test_accuracy, report.released_test_loss, report.model_sha256) == (
        None,
        None,
        None,
    )
