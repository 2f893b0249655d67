"""A silo's data and local training: shards, the paid-for record count, and the fast paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fed_builders import fed

from ppml_runtime.contract import ModelConfig, TrainingParams
from ppml_runtime.federated import local_training as lt
from ppml_runtime.federated.silo_data import build_silo_data, load_silo_data, save_silo_data
from ppml_runtime.training.errors import DataMismatchError


@pytest.fixture(scope="module")
def silos():
    config = fed().clients(3).obj()
    return config, [build_silo_data(entry) for entry in config.clients]


def test_silos_hold_disjoint_shards_of_the_declared_size(silos):
    config, data = silos
    for entry, silo in zip(config.clients, data, strict=True):
        assert silo.y_train.shape[0] == entry.data.num_records
    rows = [{r.tobytes() for r in np.concatenate([s.x_train, s.x_test])} for s in data]
    assert sum(len(r) for r in rows) == len(set().union(*rows))


def test_a_silo_whose_records_differ_from_what_was_paid_for_is_refused():
    raw = fed().clients(3).raw
    raw["clients"][0]["data"]["numRecords"] += 1
    entry = fed().set(clients=raw["clients"]).obj().clients[0]
    with pytest.raises(DataMismatchError, match="privacy cost paid for"):
        build_silo_data(entry)


def test_the_prebuilt_data_file_reads_back_identically(silos, tmp_path):
    _, data = silos
    back = load_silo_data(save_silo_data(data[0], tmp_path / "silo.npz"))
    assert np.array_equal(back.x_train, data[0].x_train)
    assert np.array_equal(back.y_test, data[0].y_test)
    assert (back.num_classes, back.image_shape) == (data[0].num_classes, data[0].image_shape)


@pytest.mark.parametrize(
    "model",
    [ModelConfig(architecture="LogisticRegression"),
     ModelConfig(architecture="Mlp", hidden_units=[16, 8])],
    ids=["logistic regression", "two-layer mlp"],
)
def test_numpy_evaluation_matches_torch(silos, model):
    _, data = silos
    net = lt.build_model(model, 64, 10, None, validate=False, seed=3)
    loss, accuracy, n = lt.evaluate_numpy(model, lt.get_parameters(net), data[0])
    t_loss, t_accuracy, t_n = lt.evaluate(net, data[0])
    assert n == t_n
    assert accuracy == pytest.approx(t_accuracy, abs=1e-9)
    assert loss == pytest.approx(t_loss, rel=1e-5)


@pytest.mark.parametrize("momentum", ["0", "0.9"], ids=["plain sgd", "sgd with momentum"])
def test_the_written_out_sgd_step_matches_torch_optim(silos, momentum):
    _, data = silos
    training = TrainingParams(epochs=1, batch_size=32, learning_rate="0.1", momentum=momentum)
    model = ModelConfig(architecture="LogisticRegression")
    ours = lt.build_model(model, 64, 10, None, validate=False, seed=1)
    result = lt.train_plain(ours, data[0], training, seed=5)
    reference = lt.build_model(model, 64, 10, None, validate=False, seed=1)
    opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=float(momentum))
    torch.manual_seed(5)
    x, y = torch.from_numpy(data[0].x_train), torch.from_numpy(data[0].y_train)
    order = torch.randperm(x.shape[0])
    for start in range(0, x.shape[0], 32):
        idx = order[start : start + 32]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(reference(x[idx]), y[idx]).backward()
        opt.step()
    for a, b in zip(result.parameters, lt.get_parameters(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert result.num_examples == data[0].y_train.shape[0]


def test_fedprox_keeps_the_local_model_closer_to_the_global_one(silos):
    _, data = silos
    training = TrainingParams(epochs=3, batch_size=32, learning_rate="0.1")
    model = ModelConfig(architecture="LogisticRegression")
    start = lt.get_parameters(lt.build_model(model, 64, 10, None, validate=False))

    def drift(mu: float) -> float:
        net = lt.build_model(model, 64, 10, None, validate=False)
        out = lt.train_plain(net, data[0], training, proximal_mu=mu, seed=2).parameters
        return float(sum(np.sum((a - b) ** 2) for a, b in zip(out, start, strict=True)))

    assert drift(1.0) < drift(0.0)
