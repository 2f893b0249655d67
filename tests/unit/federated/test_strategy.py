"""The server-side strategy chain: aggregation, central-DP wrapper, fail-closed, recording."""

from __future__ import annotations

import numpy as np
import pytest
from fed_builders import fed
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.server.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedProx,
)

from ppml_runtime.federated.local_training import steps_in_round
from ppml_runtime.federated.server_app import build_workflow, initial_parameters
from ppml_runtime.federated.strategy import (
    FailClosed,
    FederationAbortedError,
    RoundRecorder,
    build_strategy,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _chain(strategy):
    out = []
    while strategy is not None:
        out.append(type(strategy))
        strategy = getattr(strategy, "inner", None) or getattr(strategy, "strategy", None)
    return out


CHAINS = [
    ("plain FedAvg", lambda: fed(), [RoundRecorder, FedAvg]),
    ("FedProx", lambda: fed().set(strategy={"name": "FedProx"}), [RoundRecorder, FedProx]),
    ("FedAdam", lambda: fed().set(strategy={"name": "FedAdam"}), [RoundRecorder, FedAdam]),
    ("central DP, server-side clipping", lambda: fed().clients(3).central(),
     [RoundRecorder, FailClosed, DifferentialPrivacyServerSideFixedClipping, FedAvg]),
    ("central DP under SecAgg+, client-side clipping", lambda: fed().clients(3).secagg().central(),
     [RoundRecorder, FailClosed, DifferentialPrivacyClientSideFixedClipping, FedAvg]),
    ("local DP needs no server wrapper", lambda: fed().local(), [RoundRecorder, FedAvg]),
]


@pytest.mark.parametrize(("build", "chain"), [(b, c) for _, b, c in CHAINS],
                         ids=[i for i, _, _ in CHAINS])
def test_the_strategy_chain_matches_the_privacy_mode(build, chain):
    config = build().obj()
    assert _chain(build_strategy(config, initial_parameters(config))) == chain


def test_central_dp_samples_exactly_the_clients_the_accountant_assumed():
    config = fed().clients(4).central(per_round=2).obj()
    base = build_strategy(config, None).inner.inner.strategy
    assert base.num_fit_clients(4) == (2, 4)


def test_fedadam_without_an_initial_model_is_refused():
    config = fed().set(strategy={"name": "FedAdam"}).obj()
    with pytest.raises(ValueError, match="FedAdam needs an initial model"):
        build_strategy(config, None)


def _fit_res(value: float) -> FitRes:
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters([np.full(3, value)]), 1, {})


def test_a_dp_round_with_a_missing_reply_fails_closed_instead_of_aggregating():
    strategy = FailClosed(FedAvg(), expected=3)
    with pytest.raises(FederationAbortedError, match="assumed 3 clients per round"):
        strategy.aggregate_fit(1, [(None, _fit_res(1.0)), (None, _fit_res(2.0))], [])
    with pytest.raises(FederationAbortedError, match="1 failures"):
        strategy.aggregate_fit(1, [(None, _fit_res(1.0))] * 3, [RuntimeError("lost")])
    params, _ = strategy.aggregate_fit(1, [(None, _fit_res(v)) for v in (1.0, 2.0, 3.0)], [])
    assert params is not None


def test_the_secagg_workflow_gets_the_jobs_parameters():
    config = fed().clients(3).secagg(num_shares=3, threshold=2, clippingRange="4.0",
                                     quantizationRange=1024).obj()
    workflow = build_workflow(config).fit_workflow
    assert (workflow.num_shares, workflow.reconstruction_threshold) == (3, 2)
    assert (workflow.clipping_range, workflow.quantization_range) == (4.0, 1024)


def test_the_initial_model_is_seeded_so_every_run_starts_from_the_same_weights():
    config = fed().obj()
    a, b = initial_parameters(config), initial_parameters(config)
    assert a is not None and a.tensors == b.tensors


@pytest.mark.parametrize(("total", "rounds"), [(10, 3), (7, 7), (100, 1), (5, 2)],
                         ids=["uneven", "one per round", "single round", "odd"])
def test_local_dp_steps_split_over_rounds_sum_to_what_was_paid(total, rounds):
    per_round = [steps_in_round(total, rounds, r) for r in range(1, rounds + 1)]
    assert sum(per_round) == total
    assert max(per_round) - min(per_round) <= 1
