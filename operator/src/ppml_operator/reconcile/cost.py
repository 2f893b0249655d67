"""What a job costs, computed from its spec before admission (DESIGN §4).

The operator never trusts a number a pod reports: the charge is computed here, from the spec,
with the accounting library, and the runtime is configured with exactly the parameters paid for.

The formulas (the runtime must run exactly these):

* The data set declares ``N = data.numRecords`` records. The test split holds
  ``n_test = ceil(N * testFraction)`` records (exact decimal arithmetic, not floats), the
  training split ``n_train = N - n_test``. Only training records are sampled, so only they
  set the sampling rate.
* DP-SGD (PrivateTrainingJob, and each silo under FederatedJob privacy mode Local): Poisson
  sampling rate ``q = batchSize / n_train``; ``steps_per_epoch = ceil(n_train / batchSize)``;
  ``steps = epochs * steps_per_epoch`` (Local: ``rounds * localEpochs * steps_per_epoch``,
  every round charged, as if the silo were sampled every time).
* Central DP (FederatedJob privacy mode Central): as Flower runs it, exactly
  ``m = clientsPerRound`` of the ``n = len(clients)`` clients are sampled each round, uniformly
  without replacement (clientsPerRound defaults to all clients: no sampling), one Gaussian
  release per round, ``rounds`` times; the protected unit is a client under the replace-one
  relation (:class:`~ppml_operator.privacy.FixedClientSamplingDpEvent`, ``docs/ledger.md``).
  The reported sampling rate is ``m / n``.
* The noise multiplier is ``privacy.noiseMultiplier`` when given, otherwise the smallest one on
  the accounting library's grid whose epsilon at ``privacy.delta`` is at most
  ``privacy.targetEpsilon``.
* Guardrail: ``delta`` must be below ``1/N`` (DP-SGD) or ``1/len(clients)`` (Central); a
  larger delta would allow releasing whole records.

Silos of one federation that charge the same budget are composed sequentially on it (an
over-estimate when their records are disjoint, never an under-estimate).

Silos that are data owners (``clients[].datasetRef``, resolved by ``reconcile/dataset.py``)
are charged on their dataset's budget, in the dataset's namespace (the charge's budget is then
``namespace/name``): under Local DP with the silo's own DP-SGD events; under Central DP every
dataset's budget is charged the federation's one client-level event. A client-level guarantee
bounds what the whole of one silo's records can change in the output, so it bounds what any
one of its records can: each owner's ledger holds the full ε, and no owner's records ride on
another owner's budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from ppml_operator.api.errors import InvalidSpecError
from ppml_operator.api.v1alpha1 import (
    MAX_STEPS,
    DataSpec,
    FederatedJob,
    PrivacyMode,
    PrivateTrainingJob,
    parse_decimal,
)
from ppml_operator.privacy import (
    Accountant,
    CalibrationError,
    DpSgdEvent,
    FixedClientSamplingDpEvent,
    GaussianEvent,
    InvalidPrivacyParameterError,
    LocalDpSgdEvent,
    PrivacyEvent,
    calibrate_noise_multiplier,
    epsilon_of,
    event_to_dict,
)
from ppml_operator.render.common import budget_key, client_datasets
from ppml_operator.render.federation import client_data


@dataclass(frozen=True)
class SamplingPlan:
    """How DP-SGD walks one data set: the split, the sampling rate and the steps."""

    train_records: int
    """Records in the training split (``numRecords - test_records``)."""
    test_records: int
    """Records in the test split (``ceil(numRecords * testFraction)``)."""
    sample_rate: Decimal
    """Poisson sampling rate, ``batchSize / train_records``."""
    steps_per_epoch: int
    """``ceil(train_records / batchSize)``."""
    steps: int
    """Total noisy steps paid for."""


@dataclass(frozen=True)
class ClientCost:
    """The DP-SGD parameters one silo runs with under privacy mode Local."""

    name: str
    noise_multiplier: Decimal
    sample_rate: Decimal
    steps: int
    train_records: int
    test_records: int


@dataclass(frozen=True)
class JobCharge:
    """What one job charges one budget.

    ``noise_multiplier``, ``sample_rate`` and ``steps`` are those of the charge's single
    mechanism (for a PrivateTrainingJob, or Central DP); they are None when the charge covers
    several silos, whose parameters are in ``clients``.
    """

    kind: str
    name: str
    budget: str
    epsilon: Decimal
    delta: Decimal
    events: tuple[PrivacyEvent, ...]
    accountant: Accountant
    noise_multiplier: Decimal | None
    sample_rate: Decimal | None
    steps: int | None
    train_records: int | None = None
    test_records: int | None = None
    clients: tuple[ClientCost, ...] = field(default_factory=tuple)

    def event_dicts(self) -> list[dict[str, Any]]:
        """Return the events in the serialised form the budget's ledger stores."""
        return [event_to_dict(event) for event in self.events]


def sampling_plan(data: DataSpec, batch_size: int, epochs: int, *, path: str) -> SamplingPlan:
    """Return the split, sampling rate and steps of DP-SGD over ``data``.

    Parameters
    ----------
    data
        The data set (its declared record count and test fraction).
    batch_size
        The expected batch size.
    epochs
        Passes over the training split (for a silo: rounds times local epochs).
    path
        The JSON path of ``data`` in the spec, for error messages.

    Raises
    ------
    InvalidSpecError
        If the training split is smaller than the batch, or the steps exceed
        :data:`~ppml_operator.api.v1alpha1.common.MAX_STEPS`.

    """
    train, test = data.split_sizes()
    if train < batch_size:
        raise InvalidSpecError(
            f"{path}.numRecords",
            f"the training split has {train} records (numRecords {data.num_records} minus "
            f"{test} test records), fewer than batchSize {batch_size}; lower batchSize or "
            "testFraction",
        )
    steps_per_epoch = math.ceil(train / batch_size)
    if epochs * steps_per_epoch > MAX_STEPS:
        # The CRD refuses these specs; an object created under an older CRD still must not
        # reach the accountant.
        raise InvalidSpecError(
            f"{path}.numRecords",
            f"the job would pay for {epochs * steps_per_epoch} steps ({epochs} passes of "
            f"{steps_per_epoch} steps), more than the {MAX_STEPS} one job may; lower the "
            "epochs (or rounds) or raise batchSize",
        )
    return SamplingPlan(
        train_records=train,
        test_records=test,
        sample_rate=Decimal(batch_size) / Decimal(train),
        steps_per_epoch=steps_per_epoch,
        steps=epochs * steps_per_epoch,
    )


def _check_delta(delta: Decimal, population: int, field_path: str, unit: str) -> None:
    if delta * population >= 1:
        raise InvalidSpecError(
            field_path,
            f"delta {delta} must be below 1/{population} (1/number of {unit}): a larger "
            "delta allows releasing whole records",
        )


def _noise(
    *,
    noise_multiplier: str | None,
    target_epsilon: str | None,
    sample_rate: Decimal,
    steps: int,
    delta: Decimal,
    accountant: Accountant,
    field_prefix: str,
    event: Callable[[Decimal], PrivacyEvent] | None = None,
) -> tuple[Decimal, Decimal | None]:
    """Return the noise multiplier and, when calibrated, the epsilon it spends."""
    if noise_multiplier is not None:
        return parse_decimal(noise_multiplier), None
    if target_epsilon is None:  # the models refuse this; keep the type checker honest
        raise InvalidSpecError(
            f"{field_prefix}.targetEpsilon", "set targetEpsilon or noiseMultiplier"
        )
    try:
        calibration = calibrate_noise_multiplier(
            parse_decimal(target_epsilon), sample_rate, steps, delta, accountant, event=event
        )
    except CalibrationError as err:
        raise InvalidSpecError(
            f"{field_prefix}.targetEpsilon",
            f"no noise multiplier reaches epsilon {target_epsilon} at delta {delta} over "
            f"{steps} steps at sampling rate {sample_rate:.6g}: raise targetEpsilon, or train "
            f"fewer steps ({err})",
        ) from err
    return calibration.noise_multiplier, calibration.epsilon


def _epsilon(
    events: Sequence[PrivacyEvent], delta: Decimal, accountant: Accountant, field_path: str
) -> Decimal:
    try:
        epsilon = epsilon_of(list(events), delta, accountant)
    except InvalidPrivacyParameterError as err:
        raise InvalidSpecError(field_path, str(err)) from err
    if epsilon.is_infinite():
        raise InvalidSpecError(
            field_path,
            f"the noise is too small for any finite epsilon at delta {delta}; raise "
            "noiseMultiplier",
        )
    return epsilon


def training_job_charges(job: PrivateTrainingJob) -> list[JobCharge]:
    """Return the single charge of a PrivateTrainingJob on its budget.

    Raises
    ------
    InvalidSpecError
        If the spec cannot be paid for (delta too large, batch larger than the training split,
        a target epsilon no noise reaches).

    """
    spec = job.spec
    privacy = spec.privacy
    if spec.data is None:
        raise InvalidSpecError(
            "spec.datasetRef", "the cost of a job on a PrivateDataset depends on the records "
            "its owner declares: the operator prices it once it has read the dataset")
    delta = parse_decimal(privacy.delta)
    _check_delta(delta, spec.data.num_records, "spec.privacy.delta", "records")
    plan = sampling_plan(
        spec.data, spec.training.batch_size, spec.training.epochs, path="spec.data"
    )
    accountant = Accountant(privacy.accountant.value)
    noise, calibrated = _noise(
        noise_multiplier=privacy.noise_multiplier,
        target_epsilon=privacy.target_epsilon,
        sample_rate=plan.sample_rate,
        steps=plan.steps,
        delta=delta,
        accountant=accountant,
        field_prefix="spec.privacy",
    )
    event = DpSgdEvent(noise, plan.sample_rate, plan.steps)
    events: tuple[PrivacyEvent, ...] = (event,)
    epsilon = (
        calibrated
        if calibrated is not None
        else _epsilon([event], delta, accountant, "spec.privacy.noiseMultiplier")
    )
    release = spec.output.test_metrics if spec.output is not None else None
    if release is not None:
        # Two Gaussian mechanisms release the test metrics (ppml_runtime/release.py): the
        # count of correct predictions (sensitivity 1) and the sum of clipped losses
        # (sensitivity lossBound), each with noise sigma * sensitivity. They compose with the
        # training on the same budget (an upper bound: the test records are disjoint from the
        # training records, which parallel composition would not charge twice).
        events = (event, GaussianEvent(parse_decimal(release.noise_multiplier), count=2))
        epsilon = _epsilon(list(events), delta, accountant,
                           "spec.output.testMetrics.noiseMultiplier")
    return [
        JobCharge(
            kind="PrivateTrainingJob",
            name=str(job.metadata.get("name", "")),
            budget=spec.budget_ref.name if spec.budget_ref is not None else "",
            epsilon=epsilon,
            delta=delta,
            events=events,
            accountant=accountant,
            noise_multiplier=noise,
            sample_rate=plan.sample_rate,
            steps=plan.steps,
            train_records=plan.train_records,
            test_records=plan.test_records,
        )
    ]


def federated_job_charges(job: FederatedJob) -> list[JobCharge]:
    """Return a FederatedJob's charges: none, one (Central) or one per budget (Local).

    Raises
    ------
    InvalidSpecError
        If the spec cannot be paid for.

    """
    spec = job.spec
    privacy = spec.privacy
    name = str(job.metadata.get("name", ""))
    if privacy.mode == PrivacyMode.NONE:
        return []
    if privacy.delta is None:  # the models refuse this
        raise InvalidSpecError("spec.privacy.delta", "delta is required unless mode is None")
    delta = parse_decimal(privacy.delta)
    accountant = Accountant(privacy.accountant.value)
    if privacy.mode == PrivacyMode.CENTRAL:
        return _central_charge(job, name, delta, accountant)
    return _local_charges(job, name, delta, accountant)


def client_budget(job: FederatedJob, index: int) -> str | None:
    """Return the budget key a client charges under Local DP (``ns/name`` for a dataset's)."""
    client = job.spec.clients[index]
    owner = client_datasets({"metadata": job.metadata}).get(client.name)
    if owner is not None:
        return budget_key(str(owner["namespace"]), str(owner["budget"]),
                          str(job.metadata.get("namespace", "")))
    ref = client.budget_ref or job.spec.budget_ref
    return ref.name if ref is not None else None


def _central_charge(
    job: FederatedJob, name: str, delta: Decimal, accountant: Accountant
) -> list[JobCharge]:
    spec = job.spec
    if spec.budget_ref is not None:
        budgets = [spec.budget_ref.name]
    else:
        budgets = sorted({str(client_budget(job, i)) for i in range(len(spec.clients))
                          if spec.clients[i].dataset_ref is not None})
        for index in range(len(spec.clients)):  # the owner's declared data must fit a batch
            sampling_plan(client_data(job, job.spec.clients[index], index),
                          spec.training.batch_size,
                          spec.rounds * spec.training.local_epochs,
                          path=f"spec.clients[{index}].datasetRef")
    if not budgets:  # the models refuse this
        raise InvalidSpecError("spec.budgetRef", "budgetRef is required with privacy Central")
    clients = len(spec.clients)
    _check_delta(delta, clients, "spec.privacy.delta", "clients")
    per_round = spec.clients_per_round or clients
    rate = Decimal(per_round) / Decimal(clients)

    def mechanism(noise: Decimal) -> PrivacyEvent:
        return FixedClientSamplingDpEvent(noise, clients, per_round, spec.rounds)

    noise, calibrated = _noise(
        noise_multiplier=spec.privacy.noise_multiplier,
        target_epsilon=spec.privacy.target_epsilon,
        sample_rate=rate,
        steps=spec.rounds,
        delta=delta,
        accountant=accountant,
        field_prefix="spec.privacy",
        event=mechanism,
    )
    event = mechanism(noise)
    epsilon = (
        calibrated
        if calibrated is not None
        else _epsilon([event], delta, accountant, "spec.privacy.noiseMultiplier")
    )
    return [JobCharge(
        kind="FederatedJob",
        name=name,
        budget=budget,
        epsilon=epsilon,
        delta=delta,
        events=(event,),
        accountant=accountant,
        noise_multiplier=noise,
        sample_rate=rate,
        steps=spec.rounds,
    ) for budget in budgets]


def _local_charges(
    job: FederatedJob, name: str, delta: Decimal, accountant: Accountant
) -> list[JobCharge]:
    spec = job.spec
    by_budget: dict[str, list[ClientCost]] = {}
    for index, client in enumerate(spec.clients):
        path = f"spec.clients[{index}]"
        budget = client_budget(job, index)
        if budget is None:  # the models refuse this
            raise InvalidSpecError(f"{path}.budgetRef", "set budgetRef here or on the job")
        data = client_data(job, job.spec.clients[index], index)
        _check_delta(delta, data.num_records, "spec.privacy.delta", f"{path} records")
        plan = sampling_plan(
            data,
            spec.training.batch_size,
            spec.rounds * spec.training.local_epochs,
            path=f"{path}.data",
        )
        noise, _ = _noise(
            noise_multiplier=spec.privacy.noise_multiplier,
            target_epsilon=spec.privacy.target_epsilon,
            sample_rate=plan.sample_rate,
            steps=plan.steps,
            delta=delta,
            accountant=accountant,
            field_prefix="spec.privacy",
        )
        by_budget.setdefault(budget, []).append(
            ClientCost(
                name=client.name,
                noise_multiplier=noise,
                sample_rate=plan.sample_rate,
                steps=plan.steps,
                train_records=plan.train_records,
                test_records=plan.test_records,
            )
        )
    charges = []
    for budget, costs in by_budget.items():
        events = tuple(
            LocalDpSgdEvent(c.name, c.noise_multiplier, c.sample_rate, c.steps) for c in costs
        )
        single = costs[0] if len(costs) == 1 else None
        charges.append(
            JobCharge(
                kind="FederatedJob",
                name=name,
                budget=budget,
                epsilon=_epsilon(events, delta, accountant, "spec.privacy"),
                delta=delta,
                events=events,
                accountant=accountant,
                noise_multiplier=single.noise_multiplier if single else None,
                sample_rate=single.sample_rate if single else None,
                steps=single.steps if single else None,
                train_records=single.train_records if single else None,
                test_records=single.test_records if single else None,
                clients=tuple(costs),
            )
        )
    return charges


def _field_of(error: ValidationError) -> tuple[str, str]:
    first = error.errors()[0]
    location = ".".join(
        f"[{part}]" if isinstance(part, int) else str(part) for part in first["loc"]
    ).replace(".[", "[")
    return location or "spec", str(first["msg"]).removeprefix("Value error, ")


def job_charges(manifest: Mapping[str, Any]) -> list[JobCharge]:
    """Return the charges of a job manifest (a PrivateTrainingJob or FederatedJob dict).

    Parameters
    ----------
    manifest
        The object as the API server returns it (status is ignored).

    Raises
    ------
    InvalidSpecError
        If the manifest is not a valid job, or its spec cannot be paid for.

    """
    kind = manifest.get("kind")
    body = {k: v for k, v in manifest.items() if k != "status"}
    try:
        if kind == "PrivateTrainingJob":
            return training_job_charges(PrivateTrainingJob.model_validate(body))
        if kind == "FederatedJob":
            return federated_job_charges(FederatedJob.model_validate(body))
    except ValidationError as err:
        location, message = _field_of(err)
        raise InvalidSpecError(location, message) from err
    raise InvalidSpecError("kind", f"kind {kind!r} charges no budget")
