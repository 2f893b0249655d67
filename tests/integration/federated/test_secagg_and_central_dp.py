"""What reaches the ServerApp's strategy: individual updates without SecAgg+, only the aggregate
with it, and a noised aggregate under central DP.

One federation of three digits silos runs three single-round runs in turn (plain FedAvg, SecAgg+,
central DP with server-side clipping). The ServerApp writes what its strategy received
(``PPML_FEDERATION_AUDIT_DIR``), and the test compares the runs: client training is seeded, so
the three runs start from the same global model and the clients compute the same updates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fed_harness import digits_config, free_port, read_json, start_federation

from ppml_runtime.federated.contract import FederationConfig
from ppml_runtime.federated.roles import submit
from ppml_runtime.federated.server_app import initial_parameters

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NOISE, CLIP = 1.0, 0.5


def _arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as npz:
        return [npz[f"arr_{i}"] for i in range(len(npz.files))]


def _flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([a.ravel().astype(np.float64) for a in arrays])


def _variant(base: FederationConfig, uid: str, **update: object) -> FederationConfig:
    raw = base.model_dump(by_alias=True, exclude_none=True)
    raw["job"]["uid"] = uid
    raw.update(update)
    return FederationConfig.model_validate(raw)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    work = tmp_path_factory.mktemp("secagg")
    audit = work / "audit"
    base = digits_config(3, 1, f"127.0.0.1:{free_port()}", None, evaluate=False)
    configs = {
        "plain": _variant(base, "plain"),
        "secagg": _variant(
            base,
            "secagg",
            secureAggregation={
                "numShares": 3,
                "reconstructionThreshold": 2,
                "clippingRange": "8.0",
                # 2^28 levels over [-8, 8]: a quantisation step of 6e-8, so the unmasked sum
                # matches plain FedAvg to 1e-6 (the default 2^22 gives about 1e-5).
                "quantizationRange": 2**28,
            },
        ),
        "central": _variant(
            base,
            "central",
            privacy={
                "mode": "Central",
                "central": {
                    "noiseMultiplier": str(NOISE),
                    "clippingNorm": str(CLIP),
                    "clientsPerRound": 3,
                },
            },
        ),
    }
    reports = {}
    # One federation per job, as the operator runs them: each role reads its own mounted config
    # (the run config carries only the job's UID). The silos' data is the same in all three.
    for name, config in configs.items():
        config = config.model_copy(update={
            "superlink_address": f"127.0.0.1:{free_port()}",
            "control_address": f"127.0.0.1:{free_port()}"})
        fed = start_federation(work / name, config, audit_dir=audit)
        try:
            fed.wait_activated(3)
            reports[name] = submit(config, flwr_home=work / f"submit-{name}", poll_seconds=1.0)
        finally:
            fed.stop()
    return {"reports": reports, "audit": audit, "configs": configs, "work": work}


def _received(runs: dict[str, object], uid: str) -> tuple[list[str], list[list[np.ndarray]]]:
    audit = runs["audit"]
    assert isinstance(audit, Path)
    record = read_json(audit / uid / "round-1-received.json")
    digests = [r["digest"] for r in record["results"]]
    arrays = [_arrays(audit / uid / f"round-1-received-{i}.npz") for i in range(len(digests))]
    return digests, arrays


def _aggregate(runs: dict[str, object], uid: str) -> np.ndarray:
    audit = runs["audit"]
    assert isinstance(audit, Path)
    return _flat(_arrays(audit / uid / "round-1-aggregate.npz"))


def test_every_run_completes(runs: dict[str, object]) -> None:
    reports = runs["reports"]
    assert isinstance(reports, dict)
    for name, report in reports.items():
        assert report.status == "Completed", f"{name}: {report.error}"
        assert report.rounds_completed == 1


def test_without_secagg_the_strategy_sees_each_clients_update(runs: dict[str, object]) -> None:
    digests, _ = _received(runs, "plain")
    assert len(digests) == 3
    assert len(set(digests)) == 3


def test_with_secagg_the_strategy_sees_only_the_aggregate(runs: dict[str, object]) -> None:
    digests, arrays = _received(runs, "secagg")
    _, individual = _received(runs, "plain")
    assert len(digests) == 3
    assert len(set(digests)) == 1, "SecAgg+ handed the strategy distinct (individual) vectors"
    seen = _flat(arrays[0])
    for update in individual:
        assert np.max(np.abs(seen - _flat(update))) > 1e-3


def test_secagg_aggregate_equals_plain_fedavg(runs: dict[str, object]) -> None:
    plain, secagg = _aggregate(runs, "plain"), _aggregate(runs, "secagg")
    assert plain.shape == secagg.shape
    assert np.max(np.abs(plain - secagg)) <= 1e-6


def test_central_dp_adds_noise_of_the_configured_scale(runs: dict[str, object]) -> None:
    configs = runs["configs"]
    assert isinstance(configs, dict)
    initial = initial_parameters(configs["central"])
    assert initial is not None
    from flwr.common import parameters_to_ndarrays

    start = _flat(parameters_to_ndarrays(initial))
    _, received = _received(runs, "central")
    clipped = []
    for arrays in received:
        update = _flat(arrays) - start
        clipped.append(update * min(1.0, CLIP / float(np.linalg.norm(update))))
    expected = start + np.mean(clipped, axis=0)  # uniform weights under central DP
    residual = _aggregate(runs, "central") - expected
    sigma = NOISE * CLIP / 3
    assert 0.8 * sigma < float(np.std(residual)) < 1.2 * sigma
    assert abs(float(np.mean(residual))) < 4 * sigma / np.sqrt(residual.size)
