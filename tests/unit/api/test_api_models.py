"""The v1alpha1 models: round trips, defaults, refusals, and the same refusals as the CRDs."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from ppml_operator.api.v1alpha1 import (
    Accountant,
    ChargeState,
    ClippingMode,
    Composition,
    DataSpec,
    FederatedJob,
    PrivacyBudget,
    PrivateDataset,
    PrivateTrainingJob,
    parse_decimal,
)
from ppml_testing.manifests import DELETE, budget, client, edit, fedjob, ptj

REPO = Path(__file__).resolve().parents[3]
CORPUS = sorted((REPO / "tests" / "integration" / "api" / "invalid").glob("*.yaml"))
MODELS = {
    "PrivacyBudget": PrivacyBudget,
    "PrivateDataset": PrivateDataset,
    "PrivateTrainingJob": PrivateTrainingJob,
    "FederatedJob": FederatedJob,
}


def parse(obj):
    return MODELS[obj["kind"]].model_validate(obj)


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(budget(), id="a budget"),
        pytest.param(ptj(), id="a training job with a noise multiplier"),
        pytest.param(
            edit(ptj(), spec__privacy={"targetEpsilon": "1.5", "delta": "1e-6"}),
            id="a training job with a target epsilon",
        ),
        pytest.param(fedjob(), id="a central-DP federation"),
        pytest.param(fedjob(mode="Local"), id="a local-DP federation"),
        pytest.param(fedjob(mode="None"), id="a federation without DP"),
        pytest.param(edit(fedjob(), spec__secureAggregation={}), id="a SecAgg+ federation"),
    ],
)
def test_round_trip_is_stable(obj):
    once = parse(obj).to_dict()
    assert parse(once).to_dict() == once
    # Everything the user wrote survives unchanged; defaults are only added.
    assert _contains(once, obj)


def _contains(big, small) -> bool:
    if isinstance(small, dict):
        return all(k in big and _contains(big[k], v) for k, v in small.items())
    if isinstance(small, list):
        return len(big) == len(small) and all(
            _contains(b, s) for b, s in zip(big, small, strict=True)
        )
    return big == small


def test_training_job_defaults():
    job = PrivateTrainingJob.model_validate(ptj())
    spec = job.spec
    assert spec.privacy.accountant is Accountant.RDP
    assert spec.privacy.clipping_mode is ClippingMode.AUTO
    assert spec.data.test_fraction == "0.2"
    assert spec.runtime.workers == 1
    assert spec.suspend is False
    assert spec.backoff_limit == 0
    assert spec.checkpoint is None


def test_budget_and_federation_defaults():
    assert PrivacyBudget.model_validate(budget()).spec.composition is Composition.RDP
    fj = FederatedJob.model_validate(fedjob()).spec
    assert fj.tls.enabled and fj.authentication.enabled
    assert fj.strategy.name == "FedAvg"
    assert fj.secure_aggregation is None
    secagg = FederatedJob.model_validate(edit(fedjob(), spec__secureAggregation={}))
    assert secagg.spec.secure_aggregation is not None
    assert secagg.spec.secure_aggregation.num_shares == 3


def test_wire_form_is_camel_case_without_unset_fields():
    out = PrivateTrainingJob.model_validate(ptj()).to_dict()
    assert "budgetRef" in out["spec"] and "budget_ref" not in out["spec"]
    assert "status" not in out and "targetEpsilon" not in out["spec"]["privacy"]


def test_python_names_are_accepted_too():
    spec = PrivateTrainingJob.model_validate(ptj()).spec
    again = type(spec)(
        budget_ref=spec.budget_ref,
        privacy=spec.privacy,
        data=spec.data,
        model=spec.model,
        training=spec.training,
    )
    assert again.budget_ref.name == "clinic"


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        pytest.param(
            edit(ptj(), spec__privacy__delta="1e-3"),
            "below 1/data.numRecords",
            id="delta at least 1/N",
        ),
        pytest.param(
            edit(ptj(), spec__privacy__delta=".5"), "delta", id="a decimal without a leading digit"
        ),
        pytest.param(
            edit(ptj(), spec__privacy__noiseMultiplier="01"),
            "noiseMultiplier",
            id="a decimal with a leading zero",
        ),
        pytest.param(
            edit(ptj(), spec__training__optimizer="Adam", spec__training__momentum="0.9"),
            "momentum applies to optimizer Sgd only",
            id="momentum with Adam",
        ),
        pytest.param(
            edit(ptj(), spec__model={"architecture": "Cnn", "hiddenUnits": [3]}),
            "hiddenUnits applies to architecture Mlp only",
            id="hidden units on a CNN",
        ),
        pytest.param(
            edit(ptj(), spec__data__testFraction="0.95"),
            "testFraction must be at least 0 and less than 0.9",
            id="test split too big",
        ),
        pytest.param(
            edit(
                ptj(),
                spec__data={
                    "source": "Volume",
                    "numRecords": 10,
                    "volume": {
                        "claimName": "c",
                        "path": "x.npz",
                        "format": "Npz",
                        "labelColumn": "y",
                    },
                },
            ),
            "labelColumn applies to Csv and Parquet only",
            id="a label column for npz",
        ),
        pytest.param(edit(ptj(), status={"bogus": 1}), "bogus", id="an unknown status field"),
        pytest.param(
            edit(ptj(), kind="PrivacyBudget"),
            "spec.epsilon",
            id="a training spec under kind PrivacyBudget",
        ),
        pytest.param(
            edit(fedjob(), spec__secureAggregation={"modulusRange": 6000000}),
            "modulusRange must be a power of 2",
            id="a modulus that is no power of 2",
        ),
        pytest.param(
            edit(fedjob(mode="Local"), spec__privacy__clipping="Adaptive"),
            "clipping Adaptive applies to privacy mode Central only",
            id="adaptive clipping under local DP",
        ),
        pytest.param(
            edit(fedjob(), spec__strategy={"name": "FedAvg", "proximalMu": "0.1"}),
            "proximalMu applies to strategy FedProx only",
            id="a proximal term on FedAvg",
        ),
        pytest.param(
            edit(fedjob(clients=2), spec__clients=[client("a", 10), client("b", 10)]),
            "training.batchSize must not exceed any client's",
            id="a silo smaller than a batch",
        ),
        pytest.param(
            edit(fedjob(mode="Local"), spec__clients=[client("a", 200000), client("b")]),
            "below 1/data.numRecords of every client",
            id="local delta vs a big silo",
        ),
    ],
)
def test_models_refuse(obj, fragment):
    with pytest.raises(ValidationError, match=re.escape(fragment)):
        parse(obj)


def _corpus_entry(path: Path):
    text = path.read_text()
    model_expect = re.findall(r"^# model-expect: (.*)$", text, re.M)
    return yaml.safe_load(text), model_expect


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_models_refuse_what_the_api_server_refuses(path):
    """Each manifest of the integration corpus is refused by the models too, for the same reason."""
    obj, fragments = _corpus_entry(path)
    with pytest.raises(ValidationError) as info:
        parse(obj)
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {info.value}"


def test_the_corpus_is_not_empty():
    assert len(CORPUS) >= 30


UNQUOTED = """\
apiVersion: ppml.dev/v1alpha1
kind: PrivacyBudget
metadata:
  name: first-day
spec:
  epsilon: 3
  delta: "1e-5"
"""


def test_whole_numbers_may_be_written_unquoted_and_stay_exact_text():
    """Issue 13: every new user writes `epsilon: 3`; the API said "must be of type string"."""
    budget = PrivacyBudget.model_validate(yaml.safe_load(UNQUOTED))
    assert budget.spec.epsilon == "3" and parse_decimal(budget.spec.epsilon) == Decimal(3)
    job = PrivateTrainingJob.model_validate(
        edit(ptj(), spec__privacy__noiseMultiplier=2, spec__training__learningRate=1)
    )
    assert (job.spec.privacy.noise_multiplier, job.spec.training.learning_rate) == ("2", "1")


@pytest.mark.parametrize(
    ("text", "advice"),
    [
        pytest.param("epsilon: 0.5", 'quote it: epsilon: "0.5"', id="epsilon 0.5"),
        pytest.param("epsilon: 1.0e-1", 'quote it: epsilon: "0.1"', id="epsilon with exponent"),
        pytest.param("delta: 1.0e-5", 'quote it: delta: "1e-05"', id="delta 1.0e-5"),
    ],
)
def test_fractions_unquoted_are_refused_saying_how_to_write_them(text, advice):
    """A float is not exact and the API server refuses it; the message says to quote it."""
    field = text.split(":")[0]
    obj = edit(budget(), **{f"spec__{field}": yaml.safe_load(text)[field]})
    assert isinstance(obj["spec"][field], float)
    with pytest.raises(ValidationError, match=re.escape(advice)):
        PrivacyBudget.model_validate(obj)


@pytest.mark.parametrize(
    ("records", "fraction", "train", "test"),
    [
        pytest.param(1797, "0.2", 1437, 360, id="digits at the default split"),
        pytest.param(10, "0.3", 7, 3, id="exact decimals: 10 x 0.3 is 3, not 3.0000000000000004"),
        pytest.param(5000, "0", 5000, 0, id="no test split"),
        pytest.param(3, "0.5", 1, 2, id="the test split rounds up"),
        pytest.param(1, "0.1", 0, 1, id="one record goes to the test split"),
    ],
)
def test_split_sizes(records, fraction, train, test):
    data = DataSpec.model_validate(
        {
            "source": "Synthetic",
            "numRecords": records,
            "testFraction": fraction,
            "synthetic": {"numFeatures": 2, "numClasses": 2},
        }
    )
    assert data.split_sizes() == (train, test)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("1", True),
        ("0.5", True),
        ("1e-5", True),
        ("2.5E-3", True),
        ("10", True),
        ("-1", False),
        ("+1", False),
        ("1.", False),
        ("1e", False),
        ("NaN", False),
        ("inf", False),
        ("", False),
        ("1_000", False),
    ],
)
def test_parse_decimal(text, ok):
    if ok:
        assert parse_decimal(text) == Decimal(text)
    else:
        with pytest.raises(ValueError, match="not a decimal number"):
            parse_decimal(text)


def test_budget_status_round_trips_a_ledger():
    status = {
        "observedGeneration": 2,
        "spentEpsilon": "0.7",
        "reservedEpsilon": "0.3",
        "remainingEpsilon": "2",
        "charges": [
            {
                "jobUID": "0b7c",
                "jobKind": "PrivateTrainingJob",
                "jobName": "digits",
                "jobNamespace": "ml",
                "state": "Reserved",
                "epsilon": "0.3",
                "events": [
                    {
                        "schema": 1,
                        "type": "DpSgd",
                        "noiseMultiplier": "1.1",
                        "sampleRate": "0.04",
                        "steps": 69,
                    }
                ],
                "reservedAt": "2026-12-01T09:00:00Z",
            }
        ],
        "folded": {"count": 4, "rdpOrders": ["1.5", "2"], "rdp": ["0.1", "0.2"]},
        "conditions": [
            {
                "type": "Exhausted",
                "status": "False",
                "reason": "BudgetAvailable",
                "message": "",
                "lastTransitionTime": "2026-12-01T09:00:00Z",
            }
        ],
    }
    obj = PrivacyBudget.model_validate(edit(budget(), status=status))
    assert obj.status is not None and obj.status.charges is not None
    assert obj.status.charges[0].state is ChargeState.RESERVED
    assert obj.to_dict()["status"] == status


def test_training_status_round_trips():
    status = {
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Admitted",
                "status": "True",
                "reason": "Reserved",
                "message": "Reserved 0.9 on budget clinic",
                "observedGeneration": 1,
                "lastTransitionTime": "2026-12-01T09:00:00Z",
            }
        ],
        "privacy": {
            "epsilon": "0.9",
            "delta": "0.00001",
            "noiseMultiplier": "1.1",
            "sampleRate": "0.0445",
            "steps": 69,
            "accountant": "RDP",
            "budgets": [{"name": "clinic", "epsilon": "0.9", "state": "Reserved"}],
        },
        "progress": {
            "step": 10,
            "totalSteps": 69,
            "epoch": 1,
            "loss": "1.2",
            "epsilonSoFar": "0.3",
        },
        "metrics": {
            "testAccuracy": "0.9",
            "testLoss": "0.3",
            "wallSeconds": "12.5",
            "device": "cpu",
        },
        "startTime": "2026-12-01T09:00:00Z",
        "attempts": 1,
        "failed": 0,
    }
    obj = PrivateTrainingJob.model_validate(edit(ptj(), status=status))
    assert obj.to_dict()["status"] == status


def test_a_missing_key_can_be_deleted_by_the_builder():
    assert "budgetRef" not in edit(ptj(), spec__budgetRef=DELETE)["spec"]
