"""``ppml cost``: the three forms, JSON and table output, and one-sentence errors (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from ppml_operator.cli import main
from ppml_operator.privacy import DpSgdEvent, epsilon_of, event_from_dict


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def training_job(name: str, noise: str = "1.1", budget: str = "clinic") -> dict[str, Any]:
    return {
        "apiVersion": "ppml.dev/v1alpha1",
        "kind": "PrivateTrainingJob",
        "metadata": {"name": name},
        "spec": {
            "budgetRef": {"name": budget},
            "privacy": {"noiseMultiplier": noise, "delta": "1e-5", "maxGradNorm": "1.0"},
            "data": {"source": "Builtin", "builtin": {"name": "Digits"}, "numRecords": 1797},
            "model": {"architecture": "Mlp", "hiddenUnits": [64]},
            "training": {"epochs": 3, "batchSize": 64, "learningRate": "0.1"},
        },
    }


def write(tmp_path: Path, name: str, *documents: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(documents))
    return str(path)


def test_epsilon_of_given_parameters_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "cost",
        "--noise-multiplier",
        "1.5",
        "--sample-rate",
        "0.04",
        "--steps",
        "2250",
        "--delta",
        "1e-5",
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    expected = epsilon_of([DpSgdEvent(Decimal("1.5"), Decimal("0.04"), 2250)], Decimal("1e-5"))
    assert data["epsilon"] == str(expected)
    assert data["delta"] == "0.00001"
    assert data["accountant"] == "RDP"
    assert [event_from_dict(e) for e in data["events"]] == [
        DpSgdEvent(Decimal("1.5"), Decimal("0.04"), 2250)
    ]


def test_pld_accountant_is_chosen_with_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "cost",
        "--noise-multiplier",
        "3",
        "--sample-rate",
        "1",
        "--steps",
        "10",
        "--delta",
        "1e-5",
        "--accountant",
        "pld",
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["accountant"] == "PLD"
    event = DpSgdEvent(Decimal(3), Decimal(1), 10)
    assert Decimal(data["epsilon"]) == epsilon_of([event], Decimal("1e-5"), "PLD")


def test_calibration_reports_noise_and_the_epsilon_it_achieves(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(
        capsys,
        "cost",
        "--target-epsilon",
        "1",
        "--sample-rate",
        "0.004",
        "--steps",
        "2340",
        "--delta",
        "1e-5",
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["targetEpsilon"] == "1"
    noise = Decimal(data["noiseMultiplier"])
    achieved = epsilon_of([DpSgdEvent(noise, Decimal("0.004"), 2340)], Decimal("1e-5"))
    assert Decimal(data["epsilon"]) == achieved <= 1


def test_human_output_is_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "cost",
        "--noise-multiplier",
        "2",
        "--sample-rate",
        "0.01",
        "--steps",
        "100",
        "--delta",
        "1e-5",
    )
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:2] == ["NOISE", "MULTIPLIER"]
    assert "EPSILON" in header
    assert row.split()[:3] == ["2", "0.01", "100"]


ERRORS = {
    "sample rate above one": (
        ["--noise-multiplier", "1", "--sample-rate", "1.5", "--steps", "3", "--delta", "1e-5"],
        "--sample-rate",
    ),
    "steps not a number": (
        ["--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "x", "--delta", "1e-5"],
        "--steps",
    ),
    "delta zero": (
        ["--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "3", "--delta", "0"],
        "--delta",
    ),
    "neither noise nor target": (
        ["--sample-rate", "0.1", "--steps", "3", "--delta", "1e-5"],
        "--noise-multiplier",
    ),
    "both noise and target": (
        [
            "--noise-multiplier",
            "1",
            "--target-epsilon",
            "1",
            "--sample-rate",
            "0.1",
            "--steps",
            "3",
            "--delta",
            "1e-5",
        ],
        "--noise-multiplier",
    ),
    "missing delta": (
        ["--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "3"],
        "--delta",
    ),
    "unreachable target": (
        ["--target-epsilon", "1e-9", "--sample-rate", "1", "--steps", "3000", "--delta", "1e-5"],
        "--target-epsilon",
    ),
    "unknown accountant": (
        [
            "--noise-multiplier",
            "1",
            "--sample-rate",
            "0.1",
            "--steps",
            "3",
            "--delta",
            "1e-5",
            "--accountant",
            "gdp",
        ],
        "--accountant",
    ),
    "manifest file missing": (["-f", "/nonexistent/jobs.yaml"], "-f"),
    "parameters beside a manifest": (["-f", "x.yaml", "--steps", "3"], "--steps"),
}


@pytest.mark.parametrize(("argv", "named"), ERRORS.values(), ids=ERRORS.keys())
def test_errors_are_one_sentence_naming_the_argument_with_exit_code_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    code, out, err = run(capsys, "cost", *argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ppml cost: error: ")
    assert named in lines[0]
    assert lines[0].endswith(".")


def test_manifest_form_prices_each_job_as_the_operator_will(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from ppml_operator.reconcile.cost import job_charges

    jobs = [training_job("digits-a"), training_job("digits-b", noise="2.0")]
    budget = {
        "apiVersion": "ppml.dev/v1alpha1",
        "kind": "PrivacyBudget",
        "metadata": {"name": "clinic"},
        "spec": {"epsilon": "3", "delta": "1e-5"},
    }
    path = write(tmp_path, "jobs.yaml", budget, *jobs)
    code, out, _ = run(capsys, "cost", "-f", path, "--json")
    assert code == 0
    charges = json.loads(out)["charges"]
    assert [c["name"] for c in charges] == ["digits-a", "digits-b"]
    for charge, job in zip(charges, jobs, strict=True):
        (expected,) = job_charges(job)
        assert charge["epsilon"] == str(expected.epsilon)
        assert charge["delta"] == "0.00001"
        assert charge["budget"] == "clinic"
        assert [event_from_dict(e) for e in charge["events"]] == list(expected.events)
    code, out, _ = run(capsys, "cost", "-f", path)
    assert code == 0
    assert [line.split()[1] for line in out.splitlines()[1:]] == ["digits-a", "digits-b"]


def test_manifest_with_an_invalid_job_names_the_job_and_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    job = training_job("broken")
    job["spec"]["privacy"]["delta"] = "0.5"
    code, _, err = run(capsys, "cost", "-f", write(tmp_path, "bad.yaml", job))
    assert code == 2
    assert "broken" in err
    assert "delta" in err


def test_manifest_without_jobs_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "cost", "-f", write(tmp_path, "none.yaml", {"kind": "ConfigMap"}))
    assert code == 2
    assert "holds no PrivateTrainingJob or FederatedJob" in err


def test_help_is_cheap_it_imports_no_accountant() -> None:
    probe = (
        "import sys, contextlib, io\n"
        "from ppml_operator.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('dp_accounting' in sys.modules, 'kubernetes' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["False", "False"]


def test_every_registered_command_provides_add_arguments_and_run() -> None:
    import importlib

    from ppml_operator.cli import COMMANDS

    for command in COMMANDS:
        module = importlib.import_module(command.module)
        assert callable(module.add_arguments), command.module
        assert callable(module.run), command.module


def test_a_command_group_alone_shows_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "budget")
    assert code == 2
    assert "plan" in out
    assert out.startswith("usage: ppml budget")


def test_manifest_form_prices_a_federation_with_central_dp(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from ppml_operator.reconcile.cost import job_charges

    def silo(i: int) -> dict[str, object]:
        return {"data": {"source": "Builtin", "builtin": {"name": "Digits"}, "numRecords": 599,
                         "partition": {"index": i, "count": 3}}}

    job = {
        "apiVersion": "ppml.dev/v1alpha1",
        "kind": "FederatedJob",
        "metadata": {"name": "silos"},
        "spec": {
            "rounds": 3,
            "clients": [{"name": f"silo-{i}", **silo(i)} for i in range(3)],
            "model": {"architecture": "LogisticRegression"},
            "training": {"batchSize": 32, "learningRate": "0.1"},
            "budgetRef": {"name": "federation"},
            "privacy": {"mode": "Central", "noiseMultiplier": "1.0", "delta": "1e-5"},
        },
    }
    code, out, err = run(capsys, "cost", "-f", write(tmp_path, "fed.yaml", job), "--json")
    assert code == 0, err
    (charge,) = json.loads(out)["charges"]
    (expected,) = job_charges(job)
    assert charge["kind"] == "FederatedJob"
    assert charge["budget"] == "federation"
    assert charge["epsilon"] == str(expected.epsilon)
    assert [e["type"] for e in charge["events"]] == ["FixedClientSamplingDp"]
