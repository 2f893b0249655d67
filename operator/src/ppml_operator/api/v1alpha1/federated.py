"""FederatedJob: a Flower federation across data silos, with SecAgg+ and differential privacy."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from . import cel_eval
from .common import (
    API_VERSION,
    MAX_STEPS,
    Accountant,
    ApiModel,
    BudgetRef,
    BuiltinDataset,
    Conditions,
    DatasetRef,
    DataSpec,
    DecimalBounds,
    DnsLabel,
    Image,
    JobPrivacyStatus,
    ListMap,
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
from .training import (
    OPTIMIZER_RULES,
    Delta,
    LearningRate,
    Momentum,
    NoiseMultiplier,
    OutputStatus,
    TargetEpsilon,
)

ClippingNorm = Annotated[str, DecimalBounds("clippingNorm", gt="0", le="1000000")]
ProximalMu = Annotated[str, DecimalBounds("proximalMu", ge="0", le="1000")]
ServerLearningRate = Annotated[str, DecimalBounds("serverLearningRate", gt="0", le="100")]
ClippingRange = Annotated[str, DecimalBounds("clippingRange", gt="0", le="1000000")]
Alpha = Annotated[str, DecimalBounds("alpha", gt="0", le="1000")]

MAX_CLIENTS = 100
"""The most clients (silos) one FederatedJob may list."""


class StrategyName(StrEnum):
    """The server-side aggregation strategy."""

    FED_AVG = "FedAvg"
    FED_PROX = "FedProx"
    FED_ADAM = "FedAdam"


class Weighting(StrEnum):
    """How client updates are weighted when aggregated."""

    UNIFORM = "Uniform"
    NUM_EXAMPLES = "NumExamples"


class PrivacyMode(StrEnum):
    """Which differential privacy a federation runs under."""

    NONE = "None"
    CENTRAL = "Central"
    LOCAL = "Local"


class ClippingKind(StrEnum):
    """How the clipping norm of client updates is chosen (central DP)."""

    FIXED = "Fixed"
    ADAPTIVE = "Adaptive"


class ClippingSide(StrEnum):
    """Where client updates are clipped (central DP)."""

    AUTO = "Auto"
    CLIENT = "Client"
    SERVER = "Server"


class Strategy(ApiModel):
    """The Flower strategy that aggregates client updates."""

    name: StrategyName = Field(
        default=StrategyName.FED_AVG,
        description="name is FedAvg (the default), FedProx or FedAdam.",
    )
    proximal_mu: ProximalMu | None = Field(
        default=None,
        description="proximalMu is FedProx's proximal term weight, a decimal (quote fractions: "
        "\"0.5\") in "
        "[0, 1000]. FedProx only; defaults to 0.1.",
    )
    server_learning_rate: ServerLearningRate | None = Field(
        default=None,
        description="serverLearningRate is FedAdam's server-side step size, a decimal (quote "
        "fractions: \"0.5\") "
        "in (0, 100]. FedAdam only; defaults to 0.1.",
    )
    weighting: Weighting | None = Field(
        default=None,
        description="weighting is how updates are averaged: NumExamples (by each client's "
        "number of training records) or Uniform. Defaults to Uniform under differential "
        "privacy (its accounting assumes equal weights, so NumExamples is refused there) and "
        "NumExamples otherwise.",
    )

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                "!has(self.proximalMu) || self.name == 'FedProx'",
                "proximalMu applies to strategy FedProx only",
                field_path=".proximalMu",
            ),
            cel(
                "!has(self.serverLearningRate) || self.name == 'FedAdam'",
                "serverLearningRate applies to strategy FedAdam only",
                field_path=".serverLearningRate",
            ),
        )
    )

    @model_validator(mode="after")
    def _check(self) -> Strategy:
        if self.proximal_mu is not None and self.name != StrategyName.FED_PROX:
            raise ValueError("proximalMu applies to strategy FedProx only")
        if self.server_learning_rate is not None and self.name != StrategyName.FED_ADAM:
            raise ValueError("serverLearningRate applies to strategy FedAdam only")
        return self


class PartitionScheme(StrEnum):
    """How a built-in data set is cut into disjoint shards, one per silo."""

    IID = "Iid"
    DIRICHLET = "Dirichlet"


#: Records of each built-in set, for the rules that check a shard's size.
BUILTIN_RECORDS: dict[str, int] = {
    str(BuiltinDataset.DIGITS): 1797,
    str(BuiltinDataset.BREAST_CANCER): 569,
    str(BuiltinDataset.MNIST5K): 5000,
    str(BuiltinDataset.IRIS): 150,
    str(BuiltinDataset.WINE): 178,
}
_RECORDS_CEL = "{" + ", ".join(f"'{k}': {v}" for k, v in BUILTIN_RECORDS.items()) + "}"

_PARTITION_RULES: list[tuple[str, str, str | None]] = [
    ("self.index < self.count", "partition.index must be below partition.count", ".index"),
    (
        "(self.scheme == 'Dirichlet') == has(self.alpha)",
        "partition.alpha is required with scheme Dirichlet and applies to it only",
        ".alpha",
    ),
]


class DataPartition(ApiModel):
    """One disjoint shard of a built-in data set: shard index of count, IID or Dirichlet."""

    scheme: PartitionScheme = Field(
        default=PartitionScheme.IID,
        description="scheme is how the set is cut: Iid (the default: a seeded permutation cut "
        "into count near-equal shards; the first N % count hold one record more) or Dirichlet "
        "(label skew: each class is split over the shards by proportions drawn from "
        "Dirichlet(alpha); a small alpha gives each shard few classes).",
    )
    index: int = Field(
        ge=0, le=MAX_CLIENTS - 1, description="index is this silo's shard, from 0 to count - 1."
    )
    count: int = Field(
        ge=1,
        le=MAX_CLIENTS,
        description="count is the number of shards the set is cut into (1-100); silos of one "
        "job on the same set must use the same count, scheme, seed and alpha and different "
        "indexes, so that no record belongs to two silos.",
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        description="seed seeds the permutation (and the Dirichlet proportions). Defaults to 0.",
    )
    alpha: Alpha | None = Field(
        default=None,
        description="alpha is the Dirichlet concentration, a decimal (quote fractions: "
        "\"0.5\") in (0, 1000]; required with scheme Dirichlet, refused otherwise.",
    )

    model_config = ConfigDict(json_schema_extra=cel_eval.schema_extra(_PARTITION_RULES))

    @model_validator(mode="after")
    def _check(self) -> DataPartition:
        cel_eval.check(self, _PARTITION_RULES)
        return self


_FEDERATED_DATA_RULES: list[tuple[str, str, str | None]] = [
    (
        "!has(self.partition) || self.source == 'Builtin'",
        "partition applies to source Builtin only (a volume already holds only the silo's own "
        "records)",
        ".partition",
    ),
    (
        "!has(self.partition) || self.source != 'Builtin' || self.partition.scheme != 'Iid' || "
        f"self.numRecords == {_RECORDS_CEL}[self.builtin.name] / self.partition.count + "
        f"(self.partition.index < {_RECORDS_CEL}[self.builtin.name] % self.partition.count "
        "? 1 : 0)",
        "numRecords must be the size of the Iid shard: N / partition.count records, one more "
        "for the first N % partition.count shards, where N is the built-in set's size ("
        + ", ".join(f"{k} {v}" for k, v in BUILTIN_RECORDS.items())
        + ")",
        ".numRecords",
    ),
]


_DATA_SPEC_EXTRA: Any = DataSpec.model_config.get("json_schema_extra")
_DATA_SPEC_RULES: list[Any] = list(_DATA_SPEC_EXTRA["x-kubernetes-validations"])
"""DataSpec's own rules: a subclass's ``json_schema_extra`` replaces, not extends, its parent's."""


class FederatedData(DataSpec):
    """A silo's data: a data source, optionally cut to one disjoint shard of a built-in set."""

    partition: DataPartition | None = Field(
        default=None,
        description="partition gives the silo one disjoint shard of a built-in set (source "
        "Builtin only); numRecords is then the shard's size, which the privacy cost uses. "
        "Without it the silo holds the whole set, and no other silo of the job may use it.",
    )

    model_config = ConfigDict(
        json_schema_extra=cel_rules(*_DATA_SPEC_RULES, *cel_eval.entries(_FEDERATED_DATA_RULES))
    )

    @model_validator(mode="after")
    def _check_partition(self) -> FederatedData:
        cel_eval.check(self, _FEDERATED_DATA_RULES)
        part = self.partition
        if part is None or part.scheme != PartitionScheme.DIRICHLET or self.builtin is None:
            return self
        # Only Python can draw the Dirichlet proportions: the shard's size, from the set's
        # class counts, with the very function the runtime cuts the shard with.
        from ppml_runtime.federated.partition import BUILTIN_CLASS_COUNTS, shard_size

        name = str(self.builtin.name)
        size = shard_size(
            BUILTIN_CLASS_COUNTS[name], "Dirichlet", part.index, part.count, part.seed,
            part.alpha,
        )
        if size != self.num_records:
            raise ValueError(
                f"numRecords is {self.num_records} but shard {part.index} of {part.count} of "
                f"{name} (Dirichlet, alpha {part.alpha}, seed {part.seed}) holds {size} records; "
                f"set numRecords to {size}"
            )
        return self


_CLIENT_RULES: list[tuple[str, str, str | None]] = [
    ("has(self.data) != has(self.datasetRef)",
     "set exactly one of data (the silo's own records) and datasetRef (a data owner's "
     "PrivateDataset)", None),
    ("!has(self.datasetRef) || !has(self.budgetRef)",
     "budgetRef cannot be set with datasetRef: the PrivateDataset's own budget pays",
     ".budgetRef"),
]


class FederatedClient(ApiModel):
    """One data silo: a SuperNode with its own data and, optionally, its own budget."""

    name: DnsLabel = Field(
        description="name identifies the silo within the job (an RFC 1123 label); its "
        "SuperNode is named {job}-supernode-{name}."
    )
    data: FederatedData | None = Field(
        default=None,
        description="data is the silo's own data; it never leaves its pod. Set exactly one of "
        "data and datasetRef.",
    )
    dataset_ref: DatasetRef | None = Field(
        default=None,
        description="datasetRef names a data owner's PrivateDataset as this silo's data: the "
        "silo's SuperNode then runs in the dataset's namespace, on the records, the count and "
        "the split the owner declared, under the owner's access policy, and the dataset's "
        "budget pays for the silo (every client of the job must then name one, and neither "
        "spec.budgetRef nor the client's budgetRef is set).",
    )
    budget_ref: BudgetRef | None = Field(
        default=None,
        description="budgetRef names the silo's own PrivacyBudget, charged under privacy mode "
        "Local; defaults to the job's spec.budgetRef. Not with datasetRef.",
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="resources of the silo's SuperNode container."
    )
    node_selector: NodeSelector | None = Field(
        default=None, description="nodeSelector places the silo's SuperNode pod."
    )
    tolerations: Tolerations | None = Field(
        default=None, description="tolerations of the silo's SuperNode pod."
    )

    model_config = ConfigDict(json_schema_extra=cel_eval.schema_extra(_CLIENT_RULES))

    @model_validator(mode="after")
    def _check(self) -> FederatedClient:
        cel_eval.check(self, _CLIENT_RULES)
        return self


class FederatedPrivacy(ApiModel):
    """The differential privacy of a federation."""

    mode: PrivacyMode = Field(
        default=PrivacyMode.NONE,
        description="mode is None (no differential privacy; the default), Central "
        "(client-level DP: each round's aggregate is noised, charged to spec.budgetRef) or "
        "Local (each silo trains with DP-SGD, charged to the silo's own budget).",
    )
    target_epsilon: TargetEpsilon | None = Field(
        default=None,
        description="targetEpsilon is the ε the federation may cost at delta; the operator "
        "calibrates the noise multiplier. Set exactly one of targetEpsilon and noiseMultiplier "
        "unless mode is None.",
    )
    noise_multiplier: NoiseMultiplier | None = Field(
        default=None,
        description="noiseMultiplier is sigma relative to clippingNorm. Set exactly one of "
        "targetEpsilon and noiseMultiplier unless mode is None.",
    )
    delta: Delta | None = Field(
        default=None,
        description="delta is the δ of the guarantee, a decimal in (0, 1), quoted (\"1e-5\"); "
        "required "
        "unless mode is None. Central: below 1/number of clients; Local: below 1/numRecords "
        "of every silo.",
    )
    clipping_norm: ClippingNorm = Field(
        default="1.0",
        description="clippingNorm is the L2 bound of each client's update (Central) or of "
        "each per-sample gradient (Local), a decimal (quote fractions: \"0.5\") greater than 0. "
        "Defaults to 1.0.",
    )
    clipping: ClippingKind = Field(
        default=ClippingKind.FIXED,
        description="clipping is Fixed (the default) or Adaptive (the norm tracks a quantile "
        "of update norms; Central only).",
    )
    clipping_side: ClippingSide = Field(
        default=ClippingSide.AUTO,
        description="clippingSide is where updates are clipped under Central DP: Auto (the "
        "default: Client with secure aggregation, Server otherwise), Client or Server. Server "
        "with secureAggregation is refused: the server cannot see individual updates.",
    )
    accountant: Accountant = Field(
        default=Accountant.RDP,
        description="accountant is how the operator computes ε: RDP (the default) or PLD. "
        "PLD prices at most 100000 steps and ε up to 50 (by RDP); beyond them the operator "
        "charges RDP's ε instead.",
    )

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                "self.mode == 'None' ? (!has(self.targetEpsilon) && !has(self.noiseMultiplier)"
                " && !has(self.delta)) : (has(self.targetEpsilon) != has(self.noiseMultiplier)"
                " && has(self.delta))",
                "privacy mode Central or Local needs delta and exactly one of targetEpsilon "
                "and noiseMultiplier; mode None takes none of them",
            ),
            cel(
                "self.clipping != 'Adaptive' || self.mode == 'Central'",
                "clipping Adaptive applies to privacy mode Central only",
                field_path=".clipping",
            ),
        )
    )

    @model_validator(mode="after")
    def _check(self) -> FederatedPrivacy:
        given = (self.target_epsilon, self.noise_multiplier, self.delta)
        if self.mode == PrivacyMode.NONE:
            ok = all(v is None for v in given)
        else:
            ok = (self.target_epsilon is None) != (self.noise_multiplier is None) and (
                self.delta is not None
            )
        if not ok:
            raise ValueError(
                "privacy mode Central or Local needs delta and exactly one of targetEpsilon "
                "and noiseMultiplier; mode None takes none of them"
            )
        if self.clipping == ClippingKind.ADAPTIVE and self.mode != PrivacyMode.CENTRAL:
            raise ValueError("clipping Adaptive applies to privacy mode Central only")
        return self


#: Flower's SecAgg+ keeps masked values in 32-bit integers: the largest modulus it can use.
MAX_MODULUS_RANGE = 2**32

_SECAGG_RULES: list[tuple[str, str, str | None]] = [
    # Flower's SecAggPlusWorkflow refuses a threshold of numShares or more at the first round,
    # after the budget was charged: refuse it here instead.
    (
        "self.reconstructionThreshold < self.numShares",
        "reconstructionThreshold must be less than numShares (Flower's SecAgg+ refuses "
        "otherwise)",
        ".reconstructionThreshold",
    ),
    # A server that lies about which clients dropped out asks some neighbours for a client's
    # self-mask shares and others for its pairwise-mask shares; it unmasks the client's update
    # only when it can collect the threshold of both, which a threshold above half the shares
    # rules out.
    (
        "2 * self.reconstructionThreshold > self.numShares",
        "reconstructionThreshold must exceed half of numShares: otherwise a server that lies "
        "about dropouts can reconstruct both masks of one client and see its update",
        ".reconstructionThreshold",
    ),
    (
        "self.quantizationRange < self.modulusRange",
        "quantizationRange must be less than modulusRange (Flower's SecAgg+ refuses otherwise)",
        ".quantizationRange",
    ),
    (
        "self.modulusRange in ["
        + ", ".join(str(2**k) for k in range(1, 33))
        + "]",
        f"modulusRange must be a power of 2 of at most {MAX_MODULUS_RANGE} (Flower's SecAgg+ "
        "refuses other values and keeps masked values in 32-bit integers)",
        ".modulusRange",
    ),
]


class SecureAggregation(ApiModel):
    """SecAgg+ parameters: the server only ever sees the sum of the sampled clients' updates."""

    num_shares: int = Field(
        default=3,
        ge=3,
        le=MAX_CLIENTS,
        description="numShares is how many clients each client's secret is shared with "
        "(3-100, at most the clients sampled per round). Defaults to 3.",
    )
    reconstruction_threshold: int = Field(
        default=2,
        ge=2,
        le=MAX_CLIENTS,
        description="reconstructionThreshold is how many shares reconstruct a secret: more "
        "than half of numShares (so a server lying about dropouts cannot reconstruct both of a "
        "client's masks) and less than numShares (Flower's own limit); higher tolerates fewer "
        "dropouts but resists more collusion. Defaults to 2 (with the default 3 shares).",
    )
    clipping_range: ClippingRange = Field(
        default="8.0",
        description="clippingRange bounds each model parameter to [-clippingRange, "
        "clippingRange] before quantization, a decimal (quote fractions: \"0.5\"). Defaults to "
        "8.0.",
    )
    quantization_range: int = Field(
        default=4194304,
        ge=1,
        le=2**31,
        description="quantizationRange is the number of quantization levels of a parameter, "
        "less than modulusRange, and at most modulusRange / clientsPerRound so that the sum "
        "of the sampled clients' updates cannot wrap around. Defaults to 4194304.",
    )
    modulus_range: int = Field(
        default=4294967296,
        ge=2,
        le=MAX_MODULUS_RANGE,
        description="modulusRange is the size of the field masks live in, a power of 2 of at "
        "most 4294967296 (the default). clientsPerRound * quantizationRange must not exceed it: "
        "the sum of the sampled clients' quantized updates is taken modulo modulusRange.",
    )

    model_config = ConfigDict(json_schema_extra=cel_eval.schema_extra(_SECAGG_RULES))

    @model_validator(mode="after")
    def _check(self) -> SecureAggregation:
        cel_eval.check(self, _SECAGG_RULES)
        return self


class Toggle(ApiModel):
    """A feature switch that is on by default."""

    enabled: bool = Field(default=True, description="enabled turns the feature on (default).")


class FederatedTraining(ApiModel):
    """Each client's local training per round."""

    local_epochs: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="localEpochs is the number of passes a client makes over its training "
        "records per round (1-1000). Defaults to 1.",
    )
    batch_size: int = Field(
        ge=1, le=1_000_000, description="batchSize is each client's (expected) batch size."
    )
    learning_rate: LearningRate = Field(
        description="learningRate is the clients' optimizer step size, a decimal (quote fractions: "
        "\"0.5\")."
    )
    optimizer: Optimizer = Field(
        default=Optimizer.SGD, description="optimizer is Sgd (the default) or Adam."
    )
    momentum: Momentum | None = Field(
        default=None,
        description="momentum is Sgd's momentum, a decimal (quote fractions: \"0.5\") in "
        "[0, 1).",
    )
    seed: int | None = Field(
        default=None, ge=0, le=2**31 - 1, description="seed seeds initialisation and sampling."
    )

    model_config = ConfigDict(json_schema_extra=cel_eval.schema_extra(OPTIMIZER_RULES))

    @model_validator(mode="after")
    def _check(self) -> FederatedTraining:
        cel_eval.check(self, OPTIMIZER_RULES)
        return self


class FederatedRuntime(ApiModel):
    """Where and how the SuperLink, ServerApp and submitter run."""

    image: Image | None = Field(
        default=None,
        description="image is the runtime image of every pod of the federation; defaults to "
        "the operator's configured runtime image.",
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="resources of the server-side containers."
    )
    node_selector: NodeSelector | None = Field(
        default=None, description="nodeSelector places the server-side pods."
    )
    tolerations: Tolerations | None = Field(
        default=None, description="tolerations of the server-side pods."
    )


Clients = Annotated[
    list[FederatedClient], Field(min_length=1, max_length=MAX_CLIENTS), ListMap(("name",))
]

_SPEC_RULES: list[tuple[str, str, str | None]] = [
    (
        "!has(self.minClients) || self.minClients <= size(self.clients)",
        "minClients must not exceed the number of clients",
        ".minClients",
    ),
    (
        "!has(self.clientsPerRound) || self.clientsPerRound <= "
        "(has(self.minClients) ? self.minClients : size(self.clients))",
        "clientsPerRound must not exceed minClients (or the number of clients)",
        ".clientsPerRound",
    ),
    (
        "self.privacy.mode != 'Central' || has(self.budgetRef) || "
        "self.clients.all(c, has(c.datasetRef))",
        "budgetRef is required with privacy mode Central (the federation's budget pays), "
        "unless every client names a datasetRef (each dataset's budget pays)",
        ".budgetRef",
    ),
    (
        "self.privacy.mode != 'Local' || has(self.budgetRef) || "
        "self.clients.all(c, has(c.budgetRef) || has(c.datasetRef))",
        "privacy mode Local needs budgetRef, or a budgetRef on every client",
        ".budgetRef",
    ),
    (
        "self.privacy.mode != 'Central' || !has(self.minClients) || "
        "self.minClients == size(self.clients)",
        "minClients must equal the number of clients under privacy mode Central: the "
        "accounting assumes clientsPerRound are sampled from all of them",
        ".minClients",
    ),
    (
        "!has(self.secureAggregation) || self.privacy.clippingSide != 'Server'",
        "privacy.clippingSide Server cannot be combined with secureAggregation: the server "
        "never sees individual updates; use Client or Auto",
        ".privacy.clippingSide",
    ),
    (
        "!has(self.secureAggregation) || self.secureAggregation.numShares <= "
        "(has(self.clientsPerRound) ? self.clientsPerRound : size(self.clients))",
        "secureAggregation.numShares must not exceed the clients sampled per round",
        ".secureAggregation.numShares",
    ),
    (
        "!has(self.secureAggregation) || "
        "(self.privacy.mode == 'Central' && has(self.clientsPerRound) ? self.clientsPerRound "
        ": size(self.clients)) * self.secureAggregation.quantizationRange <= "
        "self.secureAggregation.modulusRange",
        "clientsPerRound * secureAggregation.quantizationRange must not exceed "
        "secureAggregation.modulusRange: the sum of the sampled clients' quantized updates would "
        "wrap around the modulus (lower quantizationRange)",
        ".secureAggregation.quantizationRange",
    ),
    (
        "self.clients.all(a, self.clients.all(b, a.name == b.name || "
        "!has(a.data) || !has(b.data) || "
        "a.data.source != 'Builtin' || b.data.source != 'Builtin' || "
        "a.data.builtin.name != b.data.builtin.name || "
        "(has(a.data.partition) && has(b.data.partition) && "
        "a.data.partition.index != b.data.partition.index && "
        "a.data.partition.count == b.data.partition.count && "
        "a.data.partition.scheme == b.data.partition.scheme && "
        "a.data.partition.seed == b.data.partition.seed && "
        "(!has(a.data.partition.alpha) || !has(b.data.partition.alpha) || "
        "double(a.data.partition.alpha) == double(b.data.partition.alpha)))))",
        "clients on the same built-in data set must hold disjoint shards of one partitioning: "
        "set data.partition on each, with the same scheme, count, seed and alpha and a "
        "different index, so that no record is in two silos",
        ".clients",
    ),
    (
        "self.privacy.mode == 'None' || !has(self.strategy.weighting) || "
        "self.strategy.weighting == 'Uniform'",
        "strategy.weighting NumExamples cannot be combined with differential privacy: the "
        "accounting assumes equal weights",
        ".strategy.weighting",
    ),
    (
        "self.privacy.mode != 'Central' || "
        "double(self.privacy.delta) * double(size(self.clients)) < 1.0",
        "privacy.delta must be below 1/number of clients under privacy mode Central",
        ".privacy.delta",
    ),
    (
        "self.privacy.mode != 'Local' || self.clients.all(c, !has(c.data) || "
        "double(self.privacy.delta) * double(c.data.numRecords) < 1.0)",
        "privacy.delta must be below 1/data.numRecords of every client under privacy mode Local",
        ".privacy.delta",
    ),
    (
        "self.clients.all(c, !has(c.data) || self.training.batchSize <= c.data.numRecords)",
        "training.batchSize must not exceed any client's data.numRecords",
        ".training.batchSize",
    ),
    (
        "self.privacy.mode != 'Local' || self.clients.all(c, !has(c.data) || "
        + steps_rule(
            "self.rounds * self.training.localEpochs",
            "c.data.numRecords",
            "self.training.batchSize",
        )
        + ")",
        f"rounds * training.localEpochs * ceil(data.numRecords / training.batchSize) must be at "
        f"most {MAX_STEPS} steps for every client under privacy mode Local: lower rounds or "
        "localEpochs, or raise batchSize",
        ".rounds",
    ),
    (
        "self.clients.all(c, has(c.datasetRef)) || self.clients.all(c, !has(c.datasetRef))",
        "either every client names a datasetRef or none does: a federation across data "
        "owners runs its server where no party's analyst reaches it, one inside a namespace "
        "runs there",
        ".clients",
    ),
    (
        "!has(self.budgetRef) || self.clients.all(c, !has(c.datasetRef))",
        "budgetRef cannot be set when the clients name datasetRef: each PrivateDataset's own "
        "budget pays",
        ".budgetRef",
    ),
    (
        "!has(self.output) || !has(self.output.testMetrics)",
        "output.testMetrics is not supported on a FederatedJob (the silos' test records stay "
        "with their owners); only output.model is",
        ".output.testMetrics",
    ),
    (
        "has(self.output) == has(oldSelf.output)",
        "spec.output cannot be added or removed after creation",
        ".output",
    ),
    (
        "has(self.budgetRef) == has(oldSelf.budgetRef)",
        "spec.budgetRef cannot be added or removed after creation",
        ".budgetRef",
    ),
    (
        "has(self.secureAggregation) == has(oldSelf.secureAggregation)",
        "spec.secureAggregation cannot be added or removed after creation",
        ".secureAggregation",
    ),
    (
        "has(self.minClients) == has(oldSelf.minClients) && "
        "has(self.clientsPerRound) == has(oldSelf.clientsPerRound)",
        "spec.minClients and spec.clientsPerRound cannot be added or removed after creation",
        None,
    ),
]


class FederatedJobSpec(ApiModel):
    """The desired state of a FederatedJob."""

    budget_ref: Annotated[BudgetRef, immutable("spec.budgetRef")] | None = Field(
        default=None,
        description="budgetRef names the PrivacyBudget the federation charges: required with "
        "privacy mode Central; under Local, the budget of every client without its own. "
        "Immutable.",
    )
    rounds: Annotated[int, immutable("spec.rounds")] = Field(
        ge=1, le=10_000, description="rounds is the number of federated rounds (1-10000)."
    )
    strategy: Annotated[Strategy, immutable("spec.strategy")] = Field(
        default_factory=Strategy,
        json_schema_extra={"default": Strategy().to_dict()},
        description="strategy aggregates the client updates. Immutable.",
    )
    clients: Annotated[Clients, immutable("spec.clients")] = Field(
        description="clients lists the silos, one SuperNode each (1-100, names unique). Immutable."
    )
    min_clients: Annotated[int, immutable("spec.minClients")] | None = Field(
        default=None,
        ge=1,
        le=MAX_CLIENTS,
        description="minClients is how many clients must be connected before a round starts; "
        "defaults to all of them (and must be all of them under privacy mode Central).",
    )
    clients_per_round: Annotated[int, immutable("spec.clientsPerRound")] | None = Field(
        default=None,
        ge=1,
        le=MAX_CLIENTS,
        description="clientsPerRound is how many clients are sampled to train each round; "
        "the client sampling rate is clientsPerRound / number of clients. Defaults to all.",
    )
    privacy: Annotated[FederatedPrivacy, immutable("spec.privacy")] = Field(
        default_factory=FederatedPrivacy,
        json_schema_extra={"default": FederatedPrivacy().to_dict()},
        description="privacy is the federation's differential privacy. Immutable.",
    )
    secure_aggregation: Annotated[SecureAggregation, immutable("spec.secureAggregation")] | None = (
        Field(
            default=None,
            description="secureAggregation enables SecAgg+ with these parameters (its presence "
            "turns it on; {} takes the defaults). Immutable.",
        )
    )
    tls: Annotated[Toggle, immutable("spec.tls")] = Field(
        default_factory=Toggle,
        json_schema_extra={"default": Toggle().to_dict()},
        description="tls encrypts SuperLink and SuperNode traffic with per-job certificates "
        "(enabled by default). Immutable.",
    )
    authentication: Annotated[Toggle, immutable("spec.authentication")] = Field(
        default_factory=Toggle,
        json_schema_extra={"default": Toggle().to_dict()},
        description="authentication admits only the job's own SuperNodes to the SuperLink "
        "(enabled by default). Immutable.",
    )
    model: Annotated[ModelSpec, immutable("spec.model")] = Field(
        description="model is the network every client trains. Immutable."
    )
    training: Annotated[FederatedTraining, immutable("spec.training")] = Field(
        description="training is each client's local training per round. Immutable."
    )
    runtime: Annotated[FederatedRuntime, immutable("spec.runtime")] = Field(
        default_factory=FederatedRuntime,
        json_schema_extra={"default": FederatedRuntime().to_dict()},
        description="runtime says where and how the server-side pods run. Immutable.",
    )
    output: Annotated[OutputSpec, immutable("spec.output")] | None = Field(
        default=None,
        description="output is what crosses back into this namespace: output.model delivers "
        "the final global model (differentially private by post-processing under privacy "
        "mode Central or Local) to a claim here, addressed as pvc://<claimName>/<path> in "
        "status.output.uri. Immutable.",
    )
    suspend: bool = Field(
        default=False, description="suspend stops the federation's pods while true."
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        description="activeDeadlineSeconds bounds the federation's running time.",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description="ttlSecondsAfterFinished deletes the job this long after it finishes.",
    )

    model_config = ConfigDict(json_schema_extra=cel_eval.schema_extra(_SPEC_RULES))

    @model_validator(mode="after")
    def _check(self) -> FederatedJobSpec:
        n = len(self.clients)
        names = [c.name for c in self.clients]
        if len(set(names)) != n:  # the CRD's list-map keys enforce this on the server
            raise ValueError("clients must have unique names")
        # Every other rule is CEL, evaluated here from the same text the CRD carries.
        cel_eval.check(self, _SPEC_RULES)
        return self


class RoundMetrics(ApiModel):
    """What one federated round took (never its loss or accuracy: see ``rounds``)."""

    round: int = Field(description="round is the round number, from 1.")
    clients: int | None = Field(default=None, description="clients that trained this round.")
    wall_seconds: str | None = Field(default=None, description="wallSeconds the round took.")


class FederationStatus(ApiModel):
    """How far the federation has come."""

    rounds_completed: int | None = Field(
        default=None, ge=0, description="roundsCompleted counts the rounds done, of spec.rounds; "
        "updated live while the federation runs (the ServerApp's gauges), and from its final "
        "report at the end."
    )
    clients_connected: int | None = Field(
        default=None, ge=0, description="clientsConnected counts SuperNodes connected now."
    )
    run_id: str | None = Field(default=None, description="runId is Flower's run ID.")
    rounds: Annotated[list[RoundMetrics], Field(max_length=100), ListMap(("round",))] | None = (
        Field(default=None, description="rounds holds the last 100 rounds' durations, oldest "
              "first, live while the federation runs. The silos' loss and accuracy are "
              "computed on private records without noise, so they are not reported here: "
              "the operator posts them as an event on "
              "the submitter Job, where only its namespace's owner reads them.")
    )


class FederatedJobStatus(ApiModel):
    """The observed state of a FederatedJob. Written only by the operator."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="observedGeneration the status reflects."
    )
    conditions: Conditions | None = Field(
        default=None, description="conditions are Admitted, Running, Complete and Failed."
    )
    privacy: JobPrivacyStatus | None = Field(
        default=None, description="privacy is what was charged, per budget."
    )
    federation: FederationStatus | None = Field(
        default=None, description="federation is the federation's progress."
    )
    output: OutputStatus | None = Field(
        default=None, description="output says where the delivered global model is."
    )
    start_time: Timestamp | None = Field(default=None, description="startTime of the job.")
    completion_time: Timestamp | None = Field(
        default=None, description="completionTime is when it completed or failed."
    )


class FederatedJob(ApiModel):
    """FederatedJob runs a Flower federation across data silos."""

    api_version: Literal["ppml.dev/v1alpha1"] = Field(
        default=API_VERSION, description="apiVersion is ppml.dev/v1alpha1."
    )
    kind: Literal["FederatedJob"] = Field(
        default="FederatedJob", description="kind is FederatedJob."
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="metadata is the standard object metadata."
    )
    spec: FederatedJobSpec = Field(description="spec is the federation the user asks for.")
    status: FederatedJobStatus | None = Field(
        default=None,
        description="status is what the operator observed and charged; only the operator "
        "writes it.",
    )
