"""Under local DP a silo counts its own rounds and steps and refuses any it was not paid for."""

from __future__ import annotations

import logging

import pytest
from fed_builders import fed

from ppml_runtime.federated import client_app, local_training
from ppml_runtime.federated.client_app import FIT_CONFIG_ROUND, SiloClient
from ppml_runtime.federated.silo_budget import (
    Spent,
    UnpaidRoundError,
    claim_round,
    read_spent,
    spent_path,
    steps_in_round,
)


def test_rounds_are_claimed_until_the_paid_ones_are_spent(tmp_path):
    path = tmp_path / "silo.spent.json"
    claimed = [claim_round(path, silo="a", paid_rounds=3, paid_steps=10, server_round=r)
               for r in (1, 2, 3)]
    assert claimed == [4, 3, 3] == [steps_in_round(10, 3, r) for r in (1, 2, 3)]
    assert read_spent(path) == Spent(rounds=3, steps=10)
    with pytest.raises(UnpaidRoundError, match="already run all 3 rounds"):
        claim_round(path, silo="a", paid_rounds=3, paid_steps=10, server_round=4)
    assert read_spent(path) == Spent(rounds=3, steps=10)


@pytest.mark.parametrize(
    ("spent", "server_round", "fragment"),
    [
        pytest.param(Spent(0, 0), 4, "paid for 3 rounds", id="server asks for round paid+1"),
        pytest.param(Spent(3, 10), 2, "already run all 3", id="server repeats an early round"),
        pytest.param(Spent(1, 9), 2, "9 of its 10 paid", id="steps spent elsewhere"),
    ],
)
def test_unpaid_rounds_are_refused_and_not_recorded(tmp_path, spent, server_round, fragment):
    path = tmp_path / "silo.spent.json"
    path.write_text(f'{{"rounds": {spent.rounds}, "steps": {spent.steps}}}')
    with pytest.raises(UnpaidRoundError, match=fragment):
        claim_round(path, silo="a", paid_rounds=3, paid_steps=10, server_round=server_round)
    assert read_spent(path) == spent


def test_a_silo_asked_for_round_paid_plus_one_refuses_and_never_touches_its_data(
    tmp_path, monkeypatch, caplog
):
    config = fed().set(rounds=3).local(steps=10).obj()
    name = config.clients[0].name
    data_path = tmp_path / f"{name}.npz"  # never created: reading it would fail the test

    def forbidden(*args, **kwargs):
        raise AssertionError("the silo touched its data or trained")

    monkeypatch.setattr(local_training, "train_local_dp", forbidden)
    monkeypatch.setattr("ppml_runtime.federated.silo_data.load_silo_data", forbidden)
    client = SiloClient(config, name, str(data_path))
    with caplog.at_level(logging.ERROR), pytest.raises(UnpaidRoundError, match="round 4"):
        client.fit([], {FIT_CONFIG_ROUND: 4})
    assert "Refused server round 4 of silo" in caplog.text
    assert "data" not in client.__dict__  # the lazy data was never read
    assert not spent_path(data_path).exists()


def test_a_fourth_fit_after_three_paid_rounds_is_refused(tmp_path, monkeypatch):
    config = fed().set(rounds=3).local(steps=10).obj()
    name = config.clients[0].name
    ran: list[int] = []

    def fake_train(model, data, training, privacy, *, rounds, server_round, steps=None):
        ran.append(steps)
        return local_training.RoundResult([], 1, 0.0, steps)

    monkeypatch.setattr(local_training, "train_local_dp", fake_train)
    monkeypatch.setattr(SiloClient, "_model", lambda self: None)
    monkeypatch.setattr(local_training, "set_parameters", lambda model, params: None)
    monkeypatch.setattr(SiloClient, "data", None, raising=False)
    client = SiloClient(config, name, str(tmp_path / f"{name}.npz"))
    for server_round in (1, 1, 2):  # a server that repeats round 1 still spends the silo's
        client.fit([], {FIT_CONFIG_ROUND: server_round})
    assert ran == [4, 3, 3]
    with pytest.raises(UnpaidRoundError):
        client.fit([], {FIT_CONFIG_ROUND: 3})
    assert ran == [4, 3, 3]
    # A new ClientApp in the same pod (a restarted process) keeps the count.
    with pytest.raises(UnpaidRoundError):
        client_app.SiloClient(config, name, str(tmp_path / f"{name}.npz")).fit(
            [], {FIT_CONFIG_ROUND: 3})


def test_central_and_plain_rounds_are_not_counted_here(tmp_path):
    config = fed().set(rounds=1).obj()
    entry = config.clients[0]
    from ppml_runtime.federated.silo_data import build_silo_data, save_silo_data

    path = save_silo_data(build_silo_data(entry), tmp_path / f"{entry.name}.npz")
    client = SiloClient(config, entry.name, str(path))
    from flwr.common import parameters_to_ndarrays

    from ppml_runtime.federated.server_app import initial_parameters

    client.fit(parameters_to_ndarrays(initial_parameters(config)), {FIT_CONFIG_ROUND: 5})
    assert not spent_path(path).exists()
