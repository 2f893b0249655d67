"""PrivateTrainingJob: centralized DP-SGD training (Opacus) paid for by a PrivacyBudget."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from . import cel_eval
from .common import (
    API_VERSION,
    MAX_STEPS,
    Accountant,
    ApiModel,
    BudgetRef,
    ClippingMode,
    Conditions,
    DatasetRef,
    DataSpec,
    DecimalBounds,
    DnsSubdomain,
    Image,
    JobPrivacyStatus,
    ModelSpec,
    NodeSelector,
    Optimizer,
    OutputSpec,
    ResourceRequirements,
    Timestamp,
    Tolerations,
    cel,
    cel_rules,
    immutable,
    steps_rule,
)

TargetEpsilon = Annotated[str, DecimalBounds("targetEpsilon", gt="0", le="1000")]
NoiseMultiplier = Annotated[str, DecimalBounds("noiseMultiplier", gt="0", le="1000")]
Delta = Annotated[str, DecimalBounds("delta", gt="0", lt="1")]
MaxGradNorm = Annotated[str, DecimalBounds("maxGradNorm", gt="0", le="1000000")]
LearningRate = Annotated[str, DecimalBounds("learningRate", gt="0", le="100")]
Momentum = Annotated[str, DecimalBounds("momentum", ge="0", lt="1")]

EXACTLY_ONE_NOISE = "exactly one of targetEpsilon and noiseMultiplier must be set"


class PrivacySpec(ApiModel):
    """The DP-SGD guarantee: how much noise, how much clipping, and how it is accounted."""

    target_epsilon: TargetEpsilon | None = Field(
        default=None,
        description="targetEpsilon is the ε the job may cost at delta, a decimal (quote fractions: "
        "\"0.5\") in "
        "(0, 1000]; the operator calibrates the smallest noise multiplier that meets it. Set "
        "exactly one of targetEpsilon and noiseMultiplier.",
    )
    noise_multiplier: NoiseMultiplier | None = Field(
        default=None,
        description="noiseMultiplier is sigma, the ratio of the Gaussian noise's standard "
        "deviation to maxGradNorm, a decimal (quote fractions: \"0.5\") greater than 0; the "
        "operator computes the "
        "resulting ε. Set exactly one of targetEpsilon and noiseMultiplier.",
    )
    delta: Delta = Field(
        description="delta is the δ of the (ε, δ) guarantee, a decimal in (0, 1), quoted "
        "(\"1e-5\": unquoted, YAML reads a float, which the API refuses); it "
        "must be below 1/data.numRecords."
    )
    max_grad_norm: MaxGradNorm = Field(
        default="1.0",
        description="maxGradNorm is C, the L2 norm each per-sample gradient is clipped to, a "
        "decimal (quote fractions: \"0.5\") greater than 0. Defaults to 1.0.",
    )
    accountant: Accountant = Field(
        default=Accountant.RDP,
        description="accountant is how the operator computes ε from the noise multiplier, "
        "sampling rate and steps: RDP (Rényi DP, the default; Opacus calls it rdp) or PLD "
        "(privacy loss distributions, tighter; the runtime checks it with Opacus' prv "
        "accountant). PLD prices at most 100000 steps and ε up to 50 (by RDP); beyond them "
        "its time and memory grow without bound, so the operator charges RDP's ε instead.",
    )
    clipping_mode: ClippingMode = Field(
        default=ClippingMode.AUTO,
        description="clippingMode is how per-sample gradients are clipped: Auto (the default: "
        "Ghost where the model supports it, Hooks otherwise), Ghost (Opacus' ghost clipping, "
        "fast) or Hooks (per-sample gradient hooks). It changes speed, never the guarantee.",
    )

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel("has(self.targetEpsilon) != has(self.noiseMultiplier)", EXACTLY_ONE_NOISE),
        )
    )

    @model_validator(mode="after")
    def _check(self) -> PrivacySpec:
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError(EXACTLY_ONE_NOISE)
        return self


OPTIMIZER_RULES: list[cel_eval.Rule] = [
    ("!has(self.momentum) || self.optimizer == 'Sgd'", "momentum applies to optimizer Sgd only",
     ".momentum"),
]
"""The optimizer's CEL rules, shared by a trainer's and a federation's training settings."""


class TrainingSpec(ApiModel):
    """Training hyper-parameters that determine the number of steps paid for."""

    epochs: int = Field(
        ge=1,
        le=10_000,
        description="epochs is the number of passes over the training records (1-10000); "
        "the job pays for epochs * ceil(trainRecords / batchSize) steps.",
    )
    batch_size: int = Field(
        ge=1,
        le=1_000_000,
        description="batchSize is the expected batch size (Poisson sampling draws each record "
        "with probability batchSize / trainRecords); at least 1 and at most data.numRecords.",
    )
    learning_rate: LearningRate = Field(
        description="learningRate is the optimizer's step size, a decimal (quote fractions: "
        "\"0.5\") in (0, 100]."
    )
    optimizer: Optimizer = Field(
        default=Optimizer.SGD, description="optimizer is Sgd (the default) or Adam."
    )
    momentum: Momentum | None = Field(
        default=None,
        description="momentum is Sgd's momentum, a decimal (quote fractions: \"0.5\") in [0, 1). "
        "Defaults to 0.",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**31 - 1,
        description="seed seeds model initialisation and sampling; unset draws a fresh seed.",
    )

    model_config = ConfigDict(json_schema_extra=cel_eval.schema_extra(OPTIMIZER_RULES))

    @model_validator(mode="after")
    def _check(self) -> TrainingSpec:
        cel_eval.check(self, OPTIMIZER_RULES)
        return self


class RuntimeSpec(ApiModel):
    """Where and how the trainer pods run."""

    image: Image | None = Field(
        default=None,
        description="image is the runtime container image; defaults to the operator's "
        "configured runtime image.",
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description="resources are each worker container's requests and limits, e.g. "
        "limits: {nvidia.com/gpu: 1}.",
    )
    node_selector: NodeSelector | None = Field(
        default=None, description="nodeSelector restricts the worker pods to matching nodes."
    )
    tolerations: Tolerations | None = Field(
        default=None, description="tolerations let the worker pods run on tainted nodes."
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="workers is the number of data-parallel workers (1-64); more than one "
        "runs distributed DP-SGD with a headless Service for the rendezvous. Defaults to 1.",
    )


class CheckpointSpec(ApiModel):
    """Where checkpoints go so an interrupted attempt resumes without spending more."""

    claim_name: DnsSubdomain = Field(
        description="claimName is the PersistentVolumeClaim checkpoints are written to "
        "(model, optimizer, accountant state, step)."
    )


STEPS_MESSAGE = (
    f"training.epochs * ceil(data.numRecords / training.batchSize) must be at most {MAX_STEPS} "
    "steps: lower epochs or raise batchSize"
)

_SPEC_RULES: list[tuple[str, str, str | None]] = [
    (
        "has(self.datasetRef) != has(self.data)",
        "set exactly one of datasetRef (data a PrivateDataset declares) and data (unprotected "
        "data of this namespace)",
        ".datasetRef",
    ),
    (
        "has(self.datasetRef) != has(self.budgetRef)",
        "a job on a PrivateDataset is charged to the dataset's own budget: leave budgetRef "
        "unset; a job with inline data must set budgetRef",
        ".budgetRef",
    ),
    (
        "!has(self.datasetRef) || !has(self.checkpoint)",
        "a job on a PrivateDataset mounts no claim of its own choosing next to the data: leave "
        "checkpoint unset (every attempt is charged up front anyway)",
        ".checkpoint",
    ),
    (
        "!has(self.data) || self.training.batchSize <= self.data.numRecords",
        "training.batchSize must not exceed data.numRecords",
        ".training.batchSize",
    ),
    (
        "!has(self.data) || double(self.privacy.delta) * double(self.data.numRecords) < 1.0",
        "privacy.delta must be below 1/data.numRecords: a larger delta allows releasing whole "
        "records",
        ".privacy.delta",
    ),
    (
        "!has(self.data) || (" + steps_rule("self.training.epochs", "self.data.numRecords",
                                            "self.training.batchSize") + ")",
        STEPS_MESSAGE,
        ".training.epochs",
    ),
    (
        "has(self.checkpoint) == has(oldSelf.checkpoint)",
        "spec.checkpoint cannot be added or removed after creation",
        ".checkpoint",
    ),
    (
        "has(self.output) == has(oldSelf.output)",
        "spec.output cannot be added or removed after creation",
        ".output",
    ),
]
"""The spec's CEL rules: the CRD carries them and the model evaluates the same text."""


class PrivateTrainingJobSpec(ApiModel):
    """The desired state of a PrivateTrainingJob."""

    dataset_ref: Annotated[DatasetRef, immutable("spec.datasetRef")] | None = Field(
        default=None,
        description="datasetRef names the PrivateDataset the job trains on, in a data owner's "
        "namespace that grants this one, or in this namespace. The dataset's budget pays, its "
        "access policy decides what may run, and the trainer pods run in its namespace. Set "
        "exactly one of datasetRef and data. Immutable.",
    )
    budget_ref: Annotated[BudgetRef, immutable("spec.budgetRef")] | None = Field(
        default=None,
        description="budgetRef names the PrivacyBudget, in this namespace, that pays for a job "
        "with inline data. Required with data, not allowed with datasetRef (the dataset's "
        "budget pays). Immutable.",
    )
    privacy: Annotated[PrivacySpec, immutable("spec.privacy")] = Field(
        description="privacy is the DP-SGD guarantee the job runs under. Immutable."
    )
    data: Annotated[DataSpec, immutable("spec.data")] | None = Field(
        default=None,
        description="data is unprotected data of this namespace the job trains on (a "
        "built-in or synthetic set, or a claim no PrivateDataset declares). Set exactly one of "
        "data and datasetRef. Immutable.",
    )
    model: Annotated[ModelSpec, immutable("spec.model")] = Field(
        description="model is the network to train. Immutable."
    )
    training: Annotated[TrainingSpec, immutable("spec.training")] = Field(
        description="training holds the hyper-parameters. Immutable."
    )
    runtime: Annotated[RuntimeSpec, immutable("spec.runtime")] = Field(
        default_factory=RuntimeSpec,
        json_schema_extra={"default": RuntimeSpec().to_dict()},
        description="runtime says where and how the trainer pods run. Immutable.",
    )
    checkpoint: Annotated[CheckpointSpec, immutable("spec.checkpoint")] | None = Field(
        default=None,
        description="checkpoint enables checkpoints to a volume, so that a restarted attempt "
        "resumes instead of paying again. Immutable.",
    )
    output: Annotated[OutputSpec, immutable("spec.output")] | None = Field(
        default=None,
        description="output is what crosses back into this namespace: the trained model on a "
        "claim, and test metrics released through a charged DP mechanism. Immutable.",
    )
    suspend: bool = Field(
        default=False,
        description="suspend stops the job's pods while true, keeping its reservation; "
        "setting it back to false resumes. Defaults to false.",
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        description="activeDeadlineSeconds bounds the job's running time from its first "
        "start; past it the job fails with reason DeadlineExceeded.",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description="ttlSecondsAfterFinished deletes the job this many seconds after it "
        "completes or fails; its charge stays in the budget.",
    )
    backoff_limit: Annotated[int, immutable("spec.backoffLimit")] = Field(
        default=0,
        ge=0,
        le=100,
        description="backoffLimit is how many failed attempts are retried (0-100). Every "
        "attempt costs privacy and is charged up front, with or without a checkpoint. "
        "Defaults to 0. Immutable: the charge covers exactly these attempts.",
    )

    model_config = ConfigDict(json_schema_extra=cel_eval.schema_extra(_SPEC_RULES))

    @model_validator(mode="after")
    def _check(self) -> PrivateTrainingJobSpec:
        # The CRD's own CEL rules, evaluated from the same text (api/v1alpha1/cel_eval.py).
        cel_eval.check(self, _SPEC_RULES)
        return self


class Progress(ApiModel):
    """Live progress the operator polls from the runtime's metrics endpoint."""

    step: int | None = Field(default=None, description="step is the last step completed.")
    total_steps: int | None = Field(
        default=None, description="totalSteps is the number of steps paid for."
    )
    epoch: int | None = Field(default=None, description="epoch is the current epoch.")
    loss: str | None = Field(
        default=None,
        description="loss is no longer reported: the batch loss is computed on private records "
        "without noise, so it is not a differentially private release (kept for compatibility; "
        "always empty).",
    )
    epsilon_so_far: str | None = Field(
        default=None,
        description="epsilonSoFar is the ε spent by the steps done so far, by the runtime's "
        "accountant.",
    )


class Metrics(ApiModel):
    """What the runtime's final report says about the trained model, as far as it is DP."""

    test_accuracy: str | None = Field(
        default=None,
        description="testAccuracy is the accuracy on the test split, in [0, 1], released "
        "through the Gaussian mechanism of spec.output.testMetrics (charged); unset without it.",
    )
    test_loss: str | None = Field(
        default=None,
        description="testLoss is the mean clipped test loss, released the same way.",
    )
    release_noise_multiplier: str | None = Field(
        default=None,
        description="releaseNoiseMultiplier is sigma of the mechanism that released the two "
        "figures above.",
    )
    wall_seconds: str | None = Field(
        default=None, description="wallSeconds is the training's wall-clock time."
    )
    device: str | None = Field(
        default=None, description="device is what trained the model, e.g. cpu or cuda:0."
    )


class OutputStatus(ApiModel):
    """Where the delivered model is."""

    uri: str | None = Field(
        default=None,
        description="uri addresses the delivered model as KServe's storageUri does: "
        "pvc://<claimName>/<path>.",
    )
    model_sha256: str | None = Field(
        default=None, description="modelSha256 is the SHA-256 of model.safetensors."
    )
    delivery_time: Timestamp | None = Field(
        default=None, description="deliveryTime is when the model was written to the claim."
    )


class PrivateTrainingJobStatus(ApiModel):
    """The observed state of a PrivateTrainingJob. Written only by the operator."""

    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="observedGeneration is the metadata.generation the status reflects.",
    )
    conditions: Conditions | None = Field(
        default=None,
        description="conditions are Admitted, Running, Complete, Failed and Suspended.",
    )
    privacy: JobPrivacyStatus | None = Field(
        default=None, description="privacy is what was charged, and what was measured."
    )
    progress: Progress | None = Field(default=None, description="progress while training.")
    metrics: Metrics | None = Field(default=None, description="metrics of the final model.")
    output: OutputStatus | None = Field(
        default=None, description="output says where the delivered model is."
    )
    start_time: Timestamp | None = Field(
        default=None, description="startTime is when the first attempt started."
    )
    completion_time: Timestamp | None = Field(
        default=None, description="completionTime is when the job completed or failed."
    )
    attempts: int | None = Field(
        default=None, ge=0, description="attempts is the number of attempts started."
    )
    failed: int | None = Field(
        default=None, ge=0, description="failed is the number of attempts that failed."
    )


class PrivateTrainingJob(ApiModel):
    """PrivateTrainingJob trains a model with DP-SGD, paid for by a PrivacyBudget."""

    api_version: Literal["ppml.dev/v1alpha1"] = Field(
        default=API_VERSION, description="apiVersion is ppml.dev/v1alpha1."
    )
    kind: Literal["PrivateTrainingJob"] = Field(
        default="PrivateTrainingJob", description="kind is PrivateTrainingJob."
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="metadata is the standard object metadata."
    )
    spec: PrivateTrainingJobSpec = Field(description="spec is the training job the user asks for.")
    status: PrivateTrainingJobStatus | None = Field(
        default=None,
        description="status is what the operator observed and charged; only the operator "
        "writes it.",
    )
