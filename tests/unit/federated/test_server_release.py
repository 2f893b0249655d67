"""The federation's release path on the server side: the final model and its digest.

- ``server_app.write_final_model`` writes the global model the ServerApp ends with (the
  parameters Flower's ``DefaultWorkflow`` leaves in the context's state) as a delivered model
  directory, and logs its SHA-256 on one line;
- ``flwr_cli.parse_model_sha256`` finds that line in ``flwr log`` output (the submitter reports
  the digest, the delivery checks the files against it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from fed_builders import fed
from flwr.common import ArrayRecord, Context, RecordDict
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

from ppml_runtime.federated.contract import MODEL_LOG_PREFIX
from ppml_runtime.federated.flwr_cli import parse_model_sha256
from ppml_runtime.federated.local_training import build_model, get_parameters, model_shape
from ppml_runtime.federated.server_app import write_final_model
from ppml_runtime.release.artifact import load_model

SHA = "ab" * 32


def context_with(arrays: list[np.ndarray]) -> Context:
    """A ServerApp context whose state holds ``arrays`` as the global model (as Flower's)."""
    state = RecordDict()
    state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord(numpy_ndarrays=arrays)
    return Context(run_id=1, node_id=0, node_config={}, state=state, run_config={})


def trained_arrays(config) -> list[np.ndarray]:
    """Weights unlike the seeded initial ones (so that writing the initial model would show)."""
    features, classes = model_shape(config.clients[0].data)
    model = build_model(config.model, features, classes, None, validate=False, seed=123)
    return [a + 0.5 for a in get_parameters(model)]


def test_the_final_global_model_is_written_with_its_card_and_its_digest_logged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = tmp_path / "output" / "model"
    config = fed().local().set(release={"modelDir": str(model_dir), "card": {
        "datasets": "clinic-a/digits", "epsilon": "8.00677"}}).obj()
    arrays = trained_arrays(config)

    sha = write_final_model(config, context_with(arrays))

    weights = (model_dir / "model.safetensors").read_bytes()
    assert sha == hashlib.sha256(weights).hexdigest()
    out = capsys.readouterr().out
    assert f"{MODEL_LOG_PREFIX}{json.dumps({'sha256': sha})}" in out.splitlines()
    assert parse_model_sha256(out) == sha
    loaded = load_model(model_dir)  # what the analyst's evaluation loads
    for got, want in zip(get_parameters(loaded), arrays, strict=True):
        np.testing.assert_allclose(got, want)
    card = json.loads((model_dir / "model-card.json").read_text())
    assert card["job"] == "digits" and card["jobNamespace"] == "ml"
    assert card["datasets"] == "clinic-a/digits" and card["epsilon"] == "8.00677"
    assert card["rounds"] == config.rounds and card["privacyMode"] == "Local"
    assert card["modelSha256"] == sha
    assert card["clients"] == 2 and card["trainRecords"] == sum(
        c.data.num_records for c in config.clients)
    readme = (model_dir / "README.md").read_text()
    assert "final global model of a Flower federation" in readme
    assert "any one of that silo's records" in readme  # Local DP's guarantee
    assert "clinic-a/digits" in readme and sha in readme
    assert not [p.name for p in model_dir.parent.iterdir() if p.name.startswith(".")]


def test_a_model_of_undeclared_shape_is_not_written(tmp_path: Path) -> None:
    config = fed().set(release={"modelDir": str(tmp_path / "model")}).obj()
    raw = config.model_dump(by_alias=True, exclude_none=True)
    for client in raw["clients"]:  # volume data: the shape is the files', not the config's
        client["data"] = {"source": "Volume", "numRecords": 100,
                          "volume": {"path": "records.npz", "format": "Npz"}}
    undeclared = type(config).model_validate(raw)
    with pytest.raises(RuntimeError, match="shape is not declared"):
        write_final_model(undeclared, context_with(trained_arrays(config)))
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(("log", "expected"), [
    pytest.param("", None, id="empty log"),
    pytest.param("INFO :      [ROUND 10]\nINFO :      Run finished\n", None,
                 id="no model line (no spec.output.model)"),
    pytest.param(f"{MODEL_LOG_PREFIX}{json.dumps({'sha256': SHA})}\n", SHA, id="the line alone"),
    pytest.param(f"INFO :      [ROUND 10]\n2026-01-01 12:00:00 | {MODEL_LOG_PREFIX}"
                 f"{json.dumps({'sha256': SHA})}  \nINFO :      Run finished\n", SHA,
                 id="behind flwr log's prefix, trailing blanks"),
    pytest.param(f"{MODEL_LOG_PREFIX}{json.dumps({'sha256': 'cd' * 32})}\n"
                 f"{MODEL_LOG_PREFIX}{json.dumps({'sha256': SHA})}\n", SHA, id="the last one wins"),
    pytest.param(f"{MODEL_LOG_PREFIX}{json.dumps({'sha256': SHA})}\n{MODEL_LOG_PREFIX}{{oops\n",
                 SHA, id="a broken line after a good one is skipped"),
    pytest.param(f"{MODEL_LOG_PREFIX}{json.dumps({'sha256': 'abc'})}\n", None,
                 id="not 64 hex digits"),
    pytest.param(f"{MODEL_LOG_PREFIX}{json.dumps(['sha256', SHA])}\n", None,
                 id="not an object"),
    pytest.param(f"{MODEL_LOG_PREFIX}{json.dumps({'sha256': 7})}\n", None, id="not a string"),
])
def test_parse_model_sha256(log: str, expected: str | None) -> None:
    assert parse_model_sha256(log) == expected
