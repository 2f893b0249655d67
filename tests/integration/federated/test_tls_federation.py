"""A FedAvg federation over TLS with SuperNode authentication, on loopback, and two impostors:
a SuperNode that does not trust the job's CA, and one whose key was never registered."""

from __future__ import annotations

from pathlib import Path

import pytest
from fed_harness import (
    GaugeWatcher,
    Pki,
    digits_config,
    free_port,
    make_auth_keys,
    start_federation,
    with_private_key,
)

from ppml_runtime.federated import flwr_cli
from ppml_runtime.federated.contract import TlsFiles
from ppml_runtime.federated.roles import submit

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_fedavg_over_tls_with_authentication_completes_and_impostors_are_refused(
    tmp_path: Path, pki: Pki, dump_logs_on_failure: list[Path]
) -> None:
    dump_logs_on_failure.append(tmp_path)
    keys = make_auth_keys(tmp_path / "keys", ["silo-0", "silo-1", "impostor"])
    config = digits_config(
        2, 2, f"127.0.0.1:{free_port()}", pki,
        auth={"publicKeyFiles": [str(keys["silo-0"][1]), str(keys["silo-1"][1])]},
    )
    # The SuperNodes start before the submitter registers their keys: they are refused at
    # first and the supernode role keeps retrying until they are admitted.
    fed = start_federation(tmp_path, config,
                           private_keys={n: keys[n][0] for n in ("silo-0", "silo-1")})
    data = str(tmp_path / "data" / "silo-0.npz")
    try:
        wrong_ca = config.model_copy(update={"tls": TlsFiles(ca_file=str(pki.rogue_ca))})
        rogue_ca = fed.spawn(
            flwr_cli.supernode_command(wrong_ca, "silo-0", data, port=free_port(),
                                       max_wait_seconds=10),
            tmp_path / "rogue-ca.log", module=False,
        )
        with GaugeWatcher(config.metrics_port_value) as gauges:
            report = submit(config, flwr_home=tmp_path / "submitter", poll_seconds=1.0)
        # Registered keys are in place now; a key that was not registered is still refused.
        unregistered = fed.spawn(
            flwr_cli.supernode_command(with_private_key(config, keys["impostor"][0]), "silo-0",
                                       data, port=free_port(), max_wait_seconds=10),
            tmp_path / "unregistered.log", module=False,
        )
        rogue_ca.wait(timeout=120)
        unregistered.wait(timeout=120)
    finally:
        fed.stop()

    assert report.status == "Completed", report.error
    assert report.rounds_completed == 2
    assert [r.round for r in report.rounds] == [1, 2]
    assert all(r.clients == 2 and r.failures == 0 for r in report.rounds), report.rounds
    assert report.final_accuracy is not None and report.final_accuracy > 0.5
    # Both impostors give up (Flower's connection-failure code 305), and the SuperLink
    # only ever activated the two genuine SuperNodes.
    assert rogue_ca.returncode != 0
    assert unregistered.returncode != 0
    assert fed.activated() == 2
    # While the rounds ran, the ServerApp served their count and durations (what the operator
    # scrapes into status.federation): never going back, the same durations as the report.
    counts = [g.rounds_completed for g in gauges.seen]
    assert counts and counts == sorted(counts) and max(counts) >= 1, counts
    assert {g.total_rounds for g in gauges.seen} == {2}
    reported = {r.round: r.seconds for r in report.rounds}
    for g in gauges.seen:
        assert all(reported[n] == s for n, s in g.round_seconds.items()), (g, reported)
    for log in ("rogue-ca.log", "unregistered.log"):
        assert "Exit Code: 305" in (tmp_path / log).read_text(errors="replace")
    assert "CERTIFICATE_VERIFY_FAILED" in (tmp_path / "rogue-ca.log").read_text(errors="replace")
    assert "Failed to activate" in (tmp_path / "unregistered.log").read_text(errors="replace")
