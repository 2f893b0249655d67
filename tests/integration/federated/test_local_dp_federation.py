"""Local DP on loopback: each silo runs its round's share of its paid-for DP-SGD steps."""

from __future__ import annotations

from pathlib import Path

import pytest
from fed_harness import digits_config, free_port, start_federation

from ppml_runtime.federated.roles import submit

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_a_local_dp_federation_completes_with_dp_sgd_at_every_silo(
    tmp_path: Path, dump_logs_on_failure: list[Path]
) -> None:
    dump_logs_on_failure.append(tmp_path)
    base = digits_config(2, 2, f"127.0.0.1:{free_port()}", None)
    raw = base.model_dump(by_alias=True, exclude_none=True)
    raw["privacy"] = {"mode": "Local"}
    for client in raw["clients"]:
        n = client["data"]["numRecords"]
        client["privacy"] = {
            "noiseMultiplier": "1.1", "sampleRate": repr(32 / n), "maxGradNorm": "1.0",
            "steps": 5, "delta": "1e-5", "chargedEpsilon": "1.0",
        }
    config = type(base).model_validate(raw)
    fed = start_federation(tmp_path, config)
    try:
        fed.wait_activated(2)
        report = submit(config, flwr_home=tmp_path / "submitter", poll_seconds=1.0)
    finally:
        fed.stop()
    assert report.status == "Completed", report.error
    assert report.rounds_completed == 2
    assert all(r.clients == 2 and r.failures == 0 for r in report.rounds), report.rounds
    assert report.final_accuracy is not None
    # Each silo took exactly its paid-for 5 DP-SGD steps, split over the rounds (3 then 2).
    assert [r.steps for r in report.rounds] == [2 * 3, 2 * 2]
