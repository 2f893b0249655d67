"""A FedAvg federation over TLS on loopback, and a SuperNode that does not trust its CA."""

from __future__ import annotations

from pathlib import Path

import pytest
from fed_harness import Pki, digits_config, free_port, start_federation

from ppml_runtime.federated import flwr_cli
from ppml_runtime.federated.contract import TlsFiles
from ppml_runtime.federated.roles import submit

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_fedavg_over_tls_completes_and_a_supernode_without_the_ca_is_refused(
    tmp_path: Path, pki: Pki, dump_logs_on_failure: list[Path]
) -> None:
    dump_logs_on_failure.append(tmp_path)
    config = digits_config(2, 2, f"127.0.0.1:{free_port()}", pki)
    fed = start_federation(tmp_path, config)
    try:
        fed.wait_activated(2)
        rogue_config = config.model_copy(update={"tls": TlsFiles(ca_file=str(pki.rogue_ca))})
        rogue = fed.spawn(
            flwr_cli.supernode_command(
                rogue_config, "silo-0", str(tmp_path / "data" / "silo-0.npz"),
                port=free_port(), max_wait_seconds=10,
            ),
            tmp_path / "rogue.log",
            module=False,
        )
        report = submit(config, flwr_home=tmp_path / "submitter", poll_seconds=1.0)
        rogue.wait(timeout=120)
    finally:
        fed.stop()

    assert report.status == "Completed", report.error
    assert report.rounds_completed == 2
    assert [r.round for r in report.rounds] == [1, 2]
    assert all(r.clients == 2 and r.failures == 0 for r in report.rounds)
    assert report.final_accuracy is not None and report.final_accuracy > 0.5
    # The rogue SuperNode trusts another CA: its TLS handshake fails, it gives up, and the
    # SuperLink never activates it (only the two genuine SuperNodes were ever activated).
    assert rogue.returncode != 0
    assert fed.activated() == 2
    rogue_log = (tmp_path / "rogue.log").read_text(errors="replace").lower()
    assert "certificate" in rogue_log or "ssl" in rogue_log
