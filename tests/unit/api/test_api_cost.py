"""Job costs before admission, checked against the accounting library directly."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from ppml_operator.api.errors import InvalidSpecError
from ppml_operator.api.v1alpha1 import PrivateTrainingJob
from ppml_operator.privacy import (
    Accountant,
    DpSgdEvent,
    FixedClientSamplingDpEvent,
    LocalDpSgdEvent,
    epsilon_of,
    event_from_dict,
)
from ppml_operator.reconcile.cost import job_charges, sampling_plan, training_job_charges
from ppml_testing.manifests import client, edit, fedjob, ptj

DELTA = Decimal("1e-5")


@pytest.mark.parametrize(
    ("records", "fraction", "batch", "epochs", "train", "rate", "steps"),
    [
        pytest.param(1797, "0.2", 64, 3, 1437, Decimal(64) / 1437, 3 * 23, id="digits"),
        pytest.param(
            5000,
            "0.2",
            128,
            5,
            4000,
            Decimal("0.032"),
            5 * 32,
            id="mnist5k, the batch divides the split",
        ),
        pytest.param(100, "0", 100, 2, 100, Decimal(1), 2, id="full batch: rate 1, one step"),
        pytest.param(
            10, "0.3", 3, 1, 7, Decimal(3) / 7, 3, id="exact split 7/3, ceil(7/3) = 3 steps"
        ),
    ],
)
def test_sampling_plan_formula(records, fraction, batch, epochs, train, rate, steps):
    job = PrivateTrainingJob.model_validate(
        edit(
            ptj(),
            spec__data__numRecords=records,
            spec__data__testFraction=fraction,
            spec__training__batchSize=batch,
            spec__training__epochs=epochs,
            spec__privacy__delta="1e-6",
        )
    )
    plan = sampling_plan(job.spec.data, batch, epochs, path="spec.data")
    assert plan.train_records == train
    assert plan.test_records == records - train
    assert plan.sample_rate == rate
    assert plan.steps_per_epoch == math.ceil(train / batch)
    assert plan.steps == steps


def test_a_noise_multiplier_is_charged_what_the_accountant_says():
    (charge,) = job_charges(ptj())
    event = DpSgdEvent(Decimal("1.1"), Decimal(64) / Decimal(1437), 69)
    assert charge.events == (event,)
    assert charge.epsilon == epsilon_of([event], DELTA, Accountant.RDP)
    assert (charge.kind, charge.name, charge.budget) == ("PrivateTrainingJob", "digits", "clinic")
    assert (charge.noise_multiplier, charge.steps, charge.delta) == (Decimal("1.1"), 69, DELTA)
    assert (charge.train_records, charge.test_records) == (1437, 360)


def test_a_target_epsilon_is_calibrated_and_never_exceeded():
    (charge,) = job_charges(edit(ptj(), spec__privacy={"targetEpsilon": "1.0", "delta": "1e-5"}))
    assert charge.epsilon <= Decimal("1.0")
    event = DpSgdEvent(charge.noise_multiplier, charge.sample_rate, charge.steps)
    assert charge.epsilon == epsilon_of([event], DELTA, Accountant.RDP)
    # Less noise would overspend: the calibration is tight, not just safe.
    lower = DpSgdEvent(charge.noise_multiplier * Decimal("0.97"), charge.sample_rate, charge.steps)
    assert epsilon_of([lower], DELTA, Accountant.RDP) > Decimal("1.0")


def test_more_noise_costs_less():
    eps = [
        job_charges(edit(ptj(), spec__privacy__noiseMultiplier=z))[0].epsilon
        for z in ("0.8", "1.1", "2.0")
    ]
    assert eps[0] > eps[1] > eps[2]


def test_pld_is_computed_with_pld():
    (charge,) = job_charges(edit(ptj(), spec__privacy__accountant="PLD"))
    assert charge.accountant is Accountant.PLD
    assert charge.epsilon == epsilon_of(list(charge.events), DELTA, Accountant.PLD)
    (rdp,) = job_charges(ptj())
    assert charge.epsilon < rdp.epsilon


def test_the_events_serialise_for_the_ledger():
    (charge,) = job_charges(ptj())
    assert [event_from_dict(d) for d in charge.event_dicts()] == list(charge.events)


@pytest.mark.parametrize(
    ("obj", "field", "fragment"),
    [
        pytest.param(
            edit(ptj(), spec__privacy__delta="1e-3"),
            "spec",
            "below 1/data.numRecords",
            id="delta at least 1/N is refused",
        ),
        pytest.param(
            edit(
                ptj(),
                spec__data__numRecords=100,
                spec__privacy__delta="1e-6",
                spec__training__batchSize=90,
            ),
            "spec.data.numRecords",
            "the training split has 80 records",
            id="a batch larger than the training split",
        ),
        pytest.param(
            edit(ptj(), spec__privacy={"targetEpsilon": "0.001", "delta": "1e-5"}),
            "spec.privacy.targetEpsilon",
            "no noise multiplier reaches epsilon 0.001",
            id="an unreachable target epsilon",
        ),
        pytest.param(
            edit(ptj(), spec__training__batchSize=0),
            "spec.training.batchSize",
            "greater than or equal to 1",
            id="a schema error names the field",
        ),
        pytest.param(
            edit(ptj(), kind="PrivacyBudget"),
            "kind",
            "charges no budget",
            id="a budget is not a job",
        ),
    ],
)
def test_refusals_name_the_field(obj, field, fragment):
    with pytest.raises(InvalidSpecError) as info:
        job_charges(obj)
    assert info.value.field == field
    assert fragment in info.value.message


def test_status_is_ignored():
    assert job_charges(edit(ptj(), status={"anything": "goes"})) == job_charges(ptj())


def test_central_dp_charges_the_federation_budget_at_client_level():
    (charge,) = job_charges(edit(fedjob(clients=4), spec__clientsPerRound=2, spec__rounds=5))
    # What Flower runs: 2 of the 4 clients each round, without replacement, 5 rounds.
    event = FixedClientSamplingDpEvent(Decimal("1.0"), 4, 2, 5)
    assert charge.events == (event,)
    assert charge.epsilon == epsilon_of([event], DELTA, Accountant.RDP)
    assert (charge.budget, charge.sample_rate, charge.steps) == ("federation", Decimal("0.5"), 5)


def test_central_dp_with_a_target_is_calibrated():
    (charge,) = job_charges(
        edit(fedjob(), spec__privacy={"mode": "Central", "delta": "1e-5", "targetEpsilon": "8"})
    )
    assert charge.epsilon <= 8
    assert charge.epsilon == epsilon_of(list(charge.events), DELTA, Accountant.RDP)


def test_no_privacy_charges_nothing():
    assert job_charges(fedjob(mode="None")) == []


def test_local_dp_charges_each_silo_budget_and_composes_shared_ones():
    obj = edit(
        fedjob(mode="Local"),
        spec__clients=[client("a", 600), client("b", 400), client("c", 500, budget="c-budget")],
        spec__rounds=2,
    )
    charges = {c.budget: c for c in job_charges(obj)}
    assert set(charges) == {"federation", "c-budget"}
    shared, own = charges["federation"], charges["c-budget"]
    # Silo a: 480 training records, batch 32: 15 steps a round; silo b: 320 -> 10.
    expected = (
        LocalDpSgdEvent("a", Decimal("1.0"), Decimal(32) / 480, 2 * 15),
        LocalDpSgdEvent("b", Decimal("1.0"), Decimal(32) / 320, 2 * 10),
    )
    assert shared.events == expected
    assert shared.epsilon == epsilon_of(list(expected), DELTA, Accountant.RDP)
    assert shared.noise_multiplier is None and [c.name for c in shared.clients] == ["a", "b"]
    assert own.events == (LocalDpSgdEvent("c", Decimal("1.0"), Decimal(32) / 400, 2 * 13),)
    assert own.steps == 26 and own.sample_rate == Decimal("0.08")


def test_local_dp_with_a_target_calibrates_each_silo():
    obj = edit(
        fedjob(mode="Local", clients=2),
        spec__privacy={"mode": "Local", "targetEpsilon": "2", "delta": "1e-5"},
        spec__clients=[client("a", 600, budget="a"), client("b", 300, budget="b")],
    )
    charges = {c.budget: c for c in job_charges(obj)}
    assert charges["a"].epsilon <= 2 and charges["b"].epsilon <= 2
    # The smaller silo samples a larger share of its records, so it needs more noise.
    assert charges["b"].noise_multiplier > charges["a"].noise_multiplier


def test_typed_and_dict_entry_points_agree():
    assert training_job_charges(PrivateTrainingJob.model_validate(ptj())) == job_charges(ptj())


def test_more_steps_than_a_job_may_pay_for_never_reach_the_accountant():
    """Issue 13: 10^13 steps were priced in-process; an object from an older CRD must not be."""
    from ppml_operator.api.v1alpha1 import DataSpec

    data = DataSpec.model_validate(
        {"source": "Synthetic", "synthetic": {"numFeatures": 4, "numClasses": 2},
         "numRecords": 1_000_000_000, "testFraction": "0"}
    )
    with pytest.raises(InvalidSpecError, match="more than the 10000000 one job may") as refused:
        sampling_plan(data, 1, 10_000, path="spec.data")
    assert refused.value.field == "spec.data.numRecords"
    assert sampling_plan(data, 1000, 10, path="spec.data").steps == 10_000_000
