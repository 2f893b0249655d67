"""FederationConfig validation (the guardrails) and the FederationReport's size bound."""

from __future__ import annotations

import json

import pytest
from fed_builders import fed
from pydantic import ValidationError

from ppml_runtime.contract import TERMINATION_MESSAGE_LIMIT
from ppml_runtime.federated.contract import (
    FederationConfig,
    FederationReport,
    RoundMetrics,
    dump_federation_report,
    parse_federation_report,
)


def test_a_plain_federation_round_trips_through_camel_case_json():
    config = fed().clients(3).obj()
    text = config.model_dump_json(by_alias=True, exclude_none=True)
    assert '"superlinkAddress"' in text and '"numRecords"' in text
    assert FederationConfig.model_validate_json(text) == config
    assert config.clients_per_round == 3
    assert config.weighting == "Examples"
    assert config.clipping_side is None


REFUSED = [
    ("central DP without its parameters", lambda: fed().set(privacy={"mode": "Central"}),
     "privacy.central is unset"),
    ("central DP sampling more clients than exist", lambda: fed().clients(2).central(per_round=3),
     "clientsPerRound 3 is more than the 2 clients"),
    ("central DP with example-weighted aggregation",
     lambda: fed().central().set(strategy={"weighting": "Examples"}), "weighting Examples"),
    ("server-side clipping under secure aggregation",
     lambda: fed().clients(3).secagg().central(clipping="ServerSide"), "ServerSide cannot"),
    ("local DP with a silo that paid for nothing",
     lambda: fed().set(privacy={"mode": "Local"}), "have no privacy"),
    ("a silo's DP parameters without local DP", lambda: fed().local().set(privacy={"mode": "None"}),
     "privacy is set but privacy.mode is None"),
    ("a reconstruction threshold as large as the shares",
     lambda: fed().clients(3).secagg(num_shares=3, threshold=3), "must be less than numShares"),
    ("more shares than clients per round",
     lambda: fed().clients(3).secagg(num_shares=4, threshold=3),
     "numShares 4 is more than the 3 clients"),
    ("a threshold of half the shares (a lying server unmasks a client)",
     lambda: fed().clients(4).secagg(num_shares=4, threshold=2), "must exceed half of numShares"),
    ("integer shares Flower cannot run (2)", lambda: fed().clients(3).secagg(num_shares=2),
     "greater than or equal to 3"),
    ("shares times levels beyond the modulus",
     lambda: fed().clients(3).secagg(quantizationRange=2**31), "exceeds the modulus range"),
    ("secure aggregation of a single client", lambda: fed().clients(1).secagg(),
     "at least 2 clients"),
    ("two silos with one name",
     lambda: fed().set(clients=[fed().obj().clients[0].model_dump(by_alias=True)] * 2),
     "names must be unique"),
    ("more minClients than clients", lambda: fed().set(minClients=3), "minClients 3"),
]


@pytest.mark.parametrize(("build", "message"), [(b, m) for _, b, m in REFUSED],
                         ids=[i for i, _, _ in REFUSED])
def test_guardrails_refuse_unsafe_or_unrunnable_federations(build, message):
    with pytest.raises(ValidationError, match=message):
        build().obj()


@pytest.mark.parametrize(
    ("secagg", "expected"),
    [(True, "ClientSide"), (False, "ServerSide")],
    ids=["secure aggregation clips at the clients", "otherwise the server clips"],
)
def test_central_dp_clips_where_the_updates_are_visible(secagg, expected):
    builder = fed().clients(3).central()
    if secagg:
        builder = builder.secagg()
    config = builder.obj()
    assert config.clipping_side == expected
    assert config.weighting == "Uniform"


def test_a_report_of_many_rounds_keeps_the_latest_within_the_termination_limit():
    rounds = [RoundMetrics(round=i, clients=10, accuracy=0.9, eval_loss=0.3, train_loss=0.4,
                           seconds=12.5) for i in range(1, 501)]
    report = FederationReport(status="Completed", run_id=2**63 - 1, rounds_completed=500,
                              rounds=rounds, final_accuracy=0.9, clients=10, error="x" * 5000)
    text = dump_federation_report(report)
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    parsed = parse_federation_report(text)
    assert parsed.rounds_completed == 500
    assert parsed.rounds[-1].round == 500
    assert parsed.rounds[0].round > 1
    assert json.loads(text)["finalAccuracy"] == 0.9


def test_a_silos_view_keeps_its_own_entry_and_the_federations_size_and_nothing_else():
    whole = fed().clients(4).secagg(num_shares=3, threshold=2).local().obj()
    view = whole.silo_view({"silo-1"})
    again = FederationConfig.model_validate_json(view.model_dump_json(by_alias=True))
    assert [c.name for c in again.clients] == ["silo-1"]
    assert again.client("silo-1") == whole.client("silo-1")
    # The checks that count clients still see four (SecAgg+ needs numShares <= sampled).
    assert again.client_count == 4 and again.clients_per_round == 4
    assert again.release is None
    assert "silo-0" not in view.model_dump_json() and "silo-2" not in view.model_dump_json()
    with pytest.raises(ValidationError, match="totalClients 1 is fewer"):
        FederationConfig.model_validate({**json.loads(whole.model_dump_json(by_alias=True)),
                                         "totalClients": 1})


def test_a_mounted_config_serves_only_the_run_of_its_own_job(tmp_path):
    from ppml_runtime.federated.contract import (
        RUN_CONFIG_KEY,
        RUN_JOB_UID_KEY,
        dump_federation_config,
        run_federation,
    )

    whole = fed().clients(2).obj()
    mounted = tmp_path / "config.json"
    mounted.write_text(dump_federation_config(whole))
    assert run_federation({RUN_JOB_UID_KEY: whole.job.uid}, str(mounted)) == whole
    with pytest.raises(ValueError, match="submitted for job other"):
        run_federation({RUN_JOB_UID_KEY: "other"}, str(mounted))
    # Without a mounted config (simulation, by hand), the run config carries the federation.
    assert run_federation({RUN_CONFIG_KEY: dump_federation_config(whole)}, None) == whole
