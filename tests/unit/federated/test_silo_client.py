"""The ClientApp's NumPyClient, called in-process: what a silo trains and reports per round."""

from __future__ import annotations

import numpy as np
import pytest
from fed_builders import fed

from ppml_runtime.federated.client_app import FIT_CONFIG_ROUND, SiloClient
from ppml_runtime.federated.local_training import steps_in_round
from ppml_runtime.federated.server_app import initial_parameters
from ppml_runtime.federated.silo_data import build_silo_data, save_silo_data

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _client(config, tmp_path, index=0):
    entry = config.clients[index]
    path = save_silo_data(build_silo_data(entry), tmp_path / f"{entry.name}.npz")
    return SiloClient(config, entry.name, str(path))


def _start(config):
    from flwr.common import parameters_to_ndarrays

    return parameters_to_ndarrays(initial_parameters(config))


@pytest.mark.slow
def test_under_local_dp_a_round_runs_its_share_of_the_paid_dp_sgd_steps(tmp_path):
    config = fed().set(rounds=3).local(steps=10).obj()
    client = _client(config, tmp_path)
    start = _start(config)
    for server_round in (1, 3):
        params, weight, metrics = client.fit(start, {FIT_CONFIG_ROUND: server_round})
        assert metrics["steps"] == steps_in_round(10, 3, server_round)
        assert weight == 1  # uniform weighting under DP
        assert any(not np.allclose(a, b) for a, b in zip(params, start, strict=True))


@pytest.mark.parametrize(
    ("build", "weight_is_records"),
    [(lambda: fed(), True), (lambda: fed().central(), False)],
    ids=["no DP: weighted by records", "central DP: uniform weights"],
)
def test_a_plain_round_trains_one_epoch_and_reports_its_weight(tmp_path, build,
                                                               weight_is_records):
    config = build().obj()
    client = _client(config, tmp_path)
    records = config.clients[0].data.num_records
    params, weight, metrics = client.fit(_start(config), {FIT_CONFIG_ROUND: 1})
    assert weight == (records if weight_is_records else 1)
    assert metrics["records"] == records
    assert metrics["steps"] == -(-records // config.training.batch_size)
    loss, n, eval_metrics = client.evaluate(params, {})
    loss0, _, eval0 = client.evaluate(_start(config), {})
    assert n == build_silo_data(config.clients[0]).y_test.shape[0]
    assert loss < loss0 and eval_metrics["accuracy"] > eval0["accuracy"]
