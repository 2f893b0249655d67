"""PrivacyBudget: a dataset's total (ε, δ) and the ledger of what jobs have charged against it."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from .common import (
    API_VERSION,
    ApiModel,
    ChargeState,
    Conditions,
    DecimalBounds,
    JsonObject,
    ListMap,
    Timestamp,
    immutable,
)


class Composition(StrEnum):
    """How the charges on a budget compose into the spent epsilon."""

    RDP = "RDP"
    BASIC = "Basic"
    PLD = "PLD"


class JobKind(StrEnum):
    """The kinds of job that charge budgets."""

    PRIVATE_TRAINING_JOB = "PrivateTrainingJob"
    FEDERATED_JOB = "FederatedJob"


BudgetEpsilon = Annotated[str, DecimalBounds("epsilon", gt="0", le="1000")]
BudgetDelta = Annotated[str, DecimalBounds("delta", gt="0", lt="1")]


class PrivacyBudgetSpec(ApiModel):
    """The desired state of a PrivacyBudget: the total guarantee its dataset may spend."""

    epsilon: BudgetEpsilon = Field(
        description="epsilon is the total ε the dataset's records may lose across all jobs, "
        'a decimal greater than 0 and at most 1000: a whole number as is (3), anything else '
        'quoted ("0.5"; the API refuses an unquoted 0.5: "must be of type integer,string"). '
        "It may be "
        "changed by whoever may edit the budget; the operator refuses to lower it below what "
        "is spent and reserved (condition Exhausted, reason EpsilonBelowSpent)."
    )
    delta: Annotated[BudgetDelta, immutable("spec.delta")] = Field(
        description="delta is the δ of the (ε, δ) guarantee, a decimal in (0, 1), quoted "
        '("1e-5": unquoted, YAML reads a float, which the API refuses); it should be below '
        "1/N for a dataset of N records. Charges compose "
        "into spent epsilon at this delta. Immutable."
    )
    composition: Annotated[Composition, immutable("spec.composition")] = Field(
        default=Composition.RDP,
        description="composition is how charges compose: RDP (the default; Rényi DP curves "
        "add up, then convert to ε at delta), PLD (privacy loss distributions compose; "
        "tighter, slower) or Basic (epsilons and deltas simply add up; for comparison). "
        "Immutable.",
    )
    description: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="description says which dataset the budget protects."
    )


class Charge(ApiModel):
    """One job's entry in the ledger, keyed by the job's UID."""

    job_uid: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        alias="jobUID",
        description="jobUID is the metadata.uid of the job; a job is charged at most once.",
    )
    job_kind: JobKind = Field(description="jobKind is PrivateTrainingJob or FederatedJob.")
    job_name: Annotated[str, StringConstraints(max_length=253)] = Field(
        description="jobName is the job's metadata.name."
    )
    job_namespace: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        default=None, description="jobNamespace is the job's namespace."
    )
    state: ChargeState = Field(
        description="state is Reserved (admitted, not yet finished), Committed (spent for "
        "good) or Released (refunded: no pod of the job ever started)."
    )
    events: list[JsonObject] = Field(
        default_factory=list,
        description="events are the charge's privacy events in the accounting library's "
        "serialised form; they compose with every other charge on the budget.",
    )
    epsilon: Annotated[str, StringConstraints(max_length=64)] = Field(
        description="epsilon is the charge's standalone ε at its delta (the job's; the "
        "budget's when delta is unset)."
    )
    delta: BudgetDelta | None = Field(
        default=None,
        description="delta is the δ this charge spends; under Basic composition the deltas of "
        "all charges add up and must stay within spec.delta.",
    )
    attempts: int | None = Field(
        default=None,
        ge=0,
        description="attempts is how many attempts of the job the events cover (retries are "
        "charged too).",
    )
    reserved_at: Timestamp | None = Field(
        default=None, description="reservedAt is when the charge was reserved."
    )
    committed_at: Timestamp | None = Field(
        default=None, description="committedAt is when the charge was committed."
    )
    released_at: Timestamp | None = Field(
        default=None, description="releasedAt is when the charge was released."
    )


class FoldedCharges(ApiModel):
    """The aggregate of committed charges taken out of the list, so the object stays small."""

    count: int = Field(default=0, ge=0, description="count is the number of charges folded in.")
    events: list[JsonObject] | None = Field(
        default=None,
        description="events are the folded charges' events, identical events merged into one "
        "with their counts added.",
    )
    rdp_orders: list[Annotated[str, StringConstraints(max_length=64)]] | None = Field(
        default=None, description="rdpOrders are the Rényi orders of the rdp curve."
    )
    rdp: list[Annotated[str, StringConstraints(max_length=64)]] | None = Field(
        default=None,
        description="rdp is the summed RDP curve of the folded charges, one decimal string "
        "per order in rdpOrders.",
    )
    basic_epsilon: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="basicEpsilon is the sum of the folded charges' epsilons."
    )
    basic_delta: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="basicDelta is the sum of the folded charges' deltas."
    )
    epsilon: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None,
        description="epsilon is the folded charges' composed ε at the budget's delta.",
    )


class PrivacyBudgetStatus(ApiModel):
    """The observed state of a PrivacyBudget: its ledger and composed totals.

    Written only by the operator, as a whole, with a compare-and-swap on resourceVersion.
    """

    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="observedGeneration is the metadata.generation the status was computed from.",
    )
    spent_epsilon: str | None = Field(
        default=None,
        description="spentEpsilon is the composed ε of all committed charges at spec.delta.",
    )
    reserved_epsilon: str | None = Field(
        default=None,
        description="reservedEpsilon is what the reserved charges add on top of spentEpsilon "
        "when composed with it, at spec.delta.",
    )
    remaining_epsilon: str | None = Field(
        default=None,
        description="remainingEpsilon is spec.epsilon minus the composed ε of committed and "
        "reserved charges (never below 0).",
    )
    charges: Annotated[list[Charge], ListMap(("jobUID",))] | None = Field(
        default=None,
        description="charges is the ledger: one entry per job UID that reserved or spent "
        "from this budget and has not been folded into folded.",
    )
    folded: FoldedCharges | None = Field(
        default=None,
        description="folded aggregates committed charges taken out of charges, so the object "
        "stays small as jobs accumulate.",
    )
    conditions: Conditions | None = Field(
        default=None,
        description="conditions are the budget's conditions: Exhausted (True when nothing "
        "more fits).",
    )


class PrivacyBudget(ApiModel):
    """PrivacyBudget is the differential-privacy budget of one dataset, shared by all jobs."""

    api_version: Literal["ppml.dev/v1alpha1"] = Field(
        default=API_VERSION, description="apiVersion is ppml.dev/v1alpha1."
    )
    kind: Literal["PrivacyBudget"] = Field(
        default="PrivacyBudget", description="kind is PrivacyBudget."
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="metadata is the standard object metadata."
    )
    spec: PrivacyBudgetSpec = Field(
        description="spec is the budget's total guarantee, set by the data owner."
    )
    status: PrivacyBudgetStatus | None = Field(
        default=None,
        description="status is the ledger and its composed totals, written by the operator only.",
    )
