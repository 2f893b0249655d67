"""Flower command lines (TLS, authentication, node config) and parsers of the CLI's JSON."""

from __future__ import annotations

import json
import tomllib

import pytest
from fed_builders import fed

from ppml_runtime.federated import flwr_cli
from ppml_runtime.federated.contract import RUN_CONFIG_KEY, FederationConfig, TlsFiles

TLS = {"caFile": "/tls/ca.crt", "certFile": "/tls/tls.crt", "keyFile": "/tls/tls.key"}


def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_the_superlink_serves_tls_with_the_jobs_certificate_and_installs_nothing():
    cmd = flwr_cli.superlink_command(fed().set(tls=TLS).obj(), port=9092)
    assert "--insecure" not in cmd
    assert _flag(cmd, "--ssl-ca-certfile") == "/tls/ca.crt"
    assert _flag(cmd, "--ssl-certfile") == "/tls/tls.crt"
    assert _flag(cmd, "--ssl-keyfile") == "/tls/tls.key"
    assert _flag(cmd, "--port") == "9092"
    assert "--disable-runtime-dependency-installation" in cmd


@pytest.mark.parametrize(
    ("auth", "enabled"),
    [({"publicKeyFiles": ["/keys/a.pub"]}, True), (None, False)],
    ids=["authentication on", "authentication off"],
)
def test_supernode_authentication_is_enabled_on_the_superlink_when_configured(auth, enabled):
    builder = fed().set(tls=TLS)
    if auth:
        builder = builder.set(auth=auth)
    assert ("--enable-supernode-auth" in flwr_cli.superlink_command(builder.obj())) is enabled


def test_a_superlink_without_tls_is_explicitly_insecure_and_one_without_its_key_is_refused():
    assert "--insecure" in flwr_cli.superlink_command(fed().obj())
    with pytest.raises(ValueError, match="keyFile"):
        flwr_cli.superlink_command(fed().set(tls={"caFile": "/tls/ca.crt"}).obj())


def test_a_supernode_trusts_the_jobs_ca_names_its_silo_and_signs_with_its_key():
    config = fed().set(tls={"caFile": "/tls/ca.crt"},
                       auth={"privateKeyFile": "/keys/node.key"}).obj()
    cmd = flwr_cli.supernode_command(config, "silo-1", "/data/silo-1.npz", port=9094)
    assert _flag(cmd, "--root-certificates") == "/tls/ca.crt"
    assert _flag(cmd, "--auth-supernode-private-key") == "/keys/node.key"
    assert _flag(cmd, "--superlink") == config.superlink_address
    assert _flag(cmd, "--node-config") == 'ppml-client="silo-1" ppml-data="/data/silo-1.npz"'
    assert "--insecure" not in cmd


def test_a_supernode_for_an_unknown_silo_is_refused():
    with pytest.raises(KeyError, match="no client 'silo-9'"):
        flwr_cli.supernode_command(fed().obj(), "silo-9", "/data/x.npz")


def test_the_flower_config_names_the_superlink_and_its_ca():
    config = fed().set(tls=TLS, superlinkAddress="job-superlink.ml.svc:9092").obj()
    parsed = tomllib.loads(flwr_cli.flower_config_toml(config))
    assert parsed["superlink"]["default"] == flwr_cli.CONNECTION_NAME
    conn = parsed["superlink"][flwr_cli.CONNECTION_NAME]
    assert conn == {"address": "job-superlink.ml.svc:9092", "root-certificates": "/tls/ca.crt"}
    insecure = tomllib.loads(flwr_cli.flower_config_toml(fed().obj()))
    assert insecure["superlink"][flwr_cli.CONNECTION_NAME]["insecure"] is True


def test_the_run_config_carries_the_whole_federation_losslessly():
    config = fed().clients(3).secagg().central(delta="1e-5").obj()
    parsed = tomllib.loads(flwr_cli.run_config_toml(config))
    assert FederationConfig.model_validate_json(parsed[RUN_CONFIG_KEY]) == config


def test_the_run_is_submitted_without_stream_and_polled_as_json():
    cmd = flwr_cli.run_command("/app", "/run.toml")
    assert "--stream" not in cmd
    assert cmd[1:4] == ["run", "/app", flwr_cli.CONNECTION_NAME]
    assert _flag(cmd, "--format") == "json"


def test_the_run_id_is_read_from_flwr_runs_json_and_a_failed_submission_raises():
    out = "Loading project\n" + json.dumps({"success": True, "run-id": "6771842255436828093"})
    assert flwr_cli.parse_run_id(out) == 6771842255436828093
    with pytest.raises(RuntimeError, match="flwr run failed"):
        flwr_cli.parse_run_id(json.dumps({"success": False, "error-message": "no SuperLink"}))


@pytest.mark.parametrize(
    ("status", "finished", "succeeded"),
    [("running", False, False), ("finished:completed", True, True),
     ("finished:failed", True, False), ("finished:stopped", True, False)],
    ids=["still running", "completed", "serverapp failed", "stopped"],
)
def test_only_a_finished_completed_run_succeeded(status, finished, succeeded):
    main, _, sub = status.partition(":")
    state = flwr_cli.RunState(status=main, sub_status=sub)
    assert (state.finished, state.succeeded) == (finished, succeeded)


def test_round_metrics_are_read_from_the_serverapp_log_last_line_per_round_wins():
    log = "\n".join([
        "INFO : starting",
        'INFO : PPML_ROUND {"round":1,"clients":3,"accuracy":0.5}',
        "PPML_ROUND not json",
        'PPML_ROUND {"round":2,"clients":3,"accuracy":0.7,"seconds":12.0}',
        'PPML_ROUND {"round":1,"clients":3,"accuracy":0.6}',
    ])
    rounds = flwr_cli.parse_round_metrics(log)
    assert [(r.round, r.accuracy) for r in rounds] == [(1, 0.6), (2, 0.7)]


def test_the_tls_files_model_needs_only_the_ca_on_the_clients():
    assert TlsFiles(ca_file="/ca").cert_file is None
