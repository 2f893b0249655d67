"""A federation's live gauges: what the ServerApp serves and what the operator reads back.

The ServerApp serves rounds completed, rounds in all and each round's duration
(:mod:`ppml_runtime.federated.metrics`); the operator parses them with the standard library
only (:func:`ppml_runtime.federated.contract.parse_federation_progress`). Never a round's loss
or accuracy: they are computed on the silos' private records without noise.
"""

from __future__ import annotations

import socket
import urllib.request

import numpy as np
import pytest
from fed_builders import fed
from flwr.common import Code, EvaluateRes, FitRes, Status, ndarrays_to_parameters
from flwr.server.strategy import FedAvg
from prometheus_client import generate_latest
from pydantic import ValidationError

from ppml_runtime import contract as rc
from ppml_runtime.federated import contract as fc
from ppml_runtime.federated.metrics import FederationGauges
from ppml_runtime.federated.strategy import RoundRecorder, build_strategy

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def served(gauges: FederationGauges) -> str:
    return generate_latest(gauges.registry).decode()


def test_the_gauges_rendered_read_back_as_the_same_progress() -> None:
    gauges = FederationGauges(0, total_rounds=5)
    assert fc.parse_federation_progress(served(gauges)) == fc.FederationProgress(
        rounds_completed=0, total_rounds=5)
    gauges.round_completed(1, 2.5)
    gauges.round_completed(2, 0.125)
    assert fc.parse_federation_progress(served(gauges)) == fc.FederationProgress(
        rounds_completed=2, total_rounds=5, round_seconds={1: 2.5, 2: 0.125})


def test_only_counts_and_durations_are_served_never_a_loss_or_an_accuracy() -> None:
    gauges = FederationGauges(0, total_rounds=3)
    gauges.round_completed(1, 1.0)
    names = {line.split("{")[0].split()[0] for line in served(gauges).splitlines()
             if line and not line.startswith("#")}
    assert names == {fc.METRIC_ROUNDS_COMPLETED, fc.METRIC_TOTAL_ROUNDS,
                     fc.METRIC_ROUND_SECONDS}


def test_only_the_newest_rounds_durations_are_served_so_the_answer_stays_small() -> None:
    gauges = FederationGauges(0, total_rounds=10_000)
    for r in range(1, fc.ROUNDS_SERVED + 21):
        gauges.round_completed(r, float(r))
    progress = fc.parse_federation_progress(served(gauges))
    assert progress.rounds_completed == fc.ROUNDS_SERVED + 20
    assert sorted(progress.round_seconds) == list(range(21, fc.ROUNDS_SERVED + 21))
    assert len(served(gauges).encode()) < 16 * 1024  # far below the operator's read bound


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_gauges_are_served_over_http_until_closed() -> None:
    port = _free_port()
    gauges = FederationGauges(port, total_rounds=2)
    try:
        gauges.round_completed(1, 3.0)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            body = answer.read().decode()
        assert fc.parse_federation_progress(body).round_seconds == {1: 3.0}
    finally:
        gauges.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1)


def test_a_port_that_cannot_be_bound_serves_nothing_and_the_federation_goes_on(caplog) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        gauges = FederationGauges(taken.getsockname()[1], total_rounds=2)
    assert gauges.server is None and "Could not serve" in caplog.text
    gauges.round_completed(1, 1.0)  # the gauges still update
    gauges.close()


PARSED = [
    ("a trainer's gauges are not a federation's", f"{rc.METRIC_STEP} 7\n",
     fc.FederationProgress()),
    ("a timestamp and an unknown label are ignored",
     f'{fc.METRIC_ROUNDS_COMPLETED} 3 1733400000000\n'
     f'{fc.METRIC_ROUND_SECONDS}{{round="1",pod="x"}} 9\n'
     f'{fc.METRIC_ROUND_SECONDS}{{round="2"}} 1.5e0\n',
     fc.FederationProgress(rounds_completed=3, round_seconds={2: 1.5})),
    ("NaN and garbage lines read as unset",
     f"{fc.METRIC_TOTAL_ROUNDS} NaN\nnot a sample\n{fc.METRIC_ROUNDS_COMPLETED} x\n",
     fc.FederationProgress()),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in PARSED],
                         ids=[i for i, _, _ in PARSED])
def test_the_operator_side_parser_reads_only_the_federation_gauges(text, expected) -> None:
    assert fc.parse_federation_progress(text) == expected


@pytest.mark.parametrize("text", [
    f"{fc.METRIC_ROUNDS_COMPLETED} -1\n",
    f"{fc.METRIC_ROUNDS_COMPLETED} +Inf\n",
    f'{fc.METRIC_ROUND_SECONDS}{{round="0"}} 1\n',
    f'{fc.METRIC_ROUND_SECONDS}{{round="one"}} 1\n',
    f'{fc.METRIC_ROUND_SECONDS}{{round="1"}} -2\n',
    f'{fc.METRIC_ROUND_SECONDS}{{round="1"}} +Inf\n',
], ids=["negative count", "infinite count", "round 0", "round not a number",
        "negative seconds", "infinite seconds"])
def test_out_of_range_gauges_are_refused_as_a_value_error(text) -> None:
    with pytest.raises(ValidationError):
        fc.parse_federation_progress(text)


def _fit(value: float) -> FitRes:
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters([np.full(3, value)]), 1, {})


def test_the_round_recorder_tells_the_gauges_each_round_once_it_completed() -> None:
    told: list[tuple[int, float]] = []
    recorder = RoundRecorder(FedAvg(), evaluate=True, on_round=lambda r, s: told.append((r, s)))
    recorder.aggregate_fit(1, [(None, _fit(1.0))], [])
    assert told == []  # evaluation is part of the round
    recorder.aggregate_evaluate(
        1, [(None, EvaluateRes(Status(Code.OK, ""), 0.5, 1, {"accuracy": 0.9}))], [])
    [(number, seconds)] = told
    assert number == 1 and seconds >= 0


def test_the_strategy_chain_passes_the_gauges_to_its_recorder() -> None:
    def on_round(number: int, seconds: float) -> None:
        pass

    strategy = build_strategy(fed().obj(), None, on_round=on_round)
    assert isinstance(strategy, RoundRecorder) and strategy.on_round is on_round


def test_unset_the_gauges_are_on_the_contract_port_the_operator_scrapes() -> None:
    config = fed().obj()
    assert config.metrics_port is None  # not written: older SuperNode images read the config
    assert config.metrics_port_value == rc.FEDERATION_METRICS_PORT == 9097
    assert fed().set(metricsPort=0).obj().metrics_port_value == 0
