"""The operator <-> runtime contract: config schema, environment names, ports, report format.

This module is the single definition both sides use. It imports neither torch nor kopf (only
pydantic and the standard library), so the operator can render configs and parse reports without
pulling in the training stack, and the runtime can validate what it was given before importing it.

Evolution rule: new fields are optional; a field's meaning never changes. ``CONTRACT_VERSION``
changes only when an incompatible change is unavoidable.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FiniteFloat,
    model_validator,
)
from pydantic.alias_generators import to_camel

CONTRACT_VERSION = 1

#: Where the operator mounts the runtime config (a ConfigMap key) inside the pod.
CONFIG_DIR = "/etc/ppml"
CONFIG_FILE = "config.json"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
#: Environment variable that may point at the config instead of ``CONFIG_PATH``.
ENV_CONFIG = "PPML_CONFIG"
#: Environment variable holding the SHA-256 of the config the operator rendered (and was paid
#: for). It is set in the pod template, which nobody can edit after creation; the config file
#: comes from a ConfigMap, which an ``edit`` user could replace. The runtime refuses a config
#: whose digest differs, before it touches any data.
ENV_CONFIG_SHA256 = "PPML_CONFIG_SHA256"
#: Environment variables the operator sets on every runtime container.
ENV_JOB_NAME = "PPML_JOB_NAME"
ENV_JOB_NAMESPACE = "PPML_JOB_NAMESPACE"
ENV_JOB_UID = "PPML_JOB_UID"
ENV_POD_IP = "PPML_POD_IP"
#: Distributed training rendezvous (torch.distributed env:// convention).
ENV_MASTER_ADDR = "MASTER_ADDR"
ENV_MASTER_PORT = "MASTER_PORT"
ENV_RANK = "RANK"
ENV_WORLD_SIZE = "WORLD_SIZE"

#: Port of the Prometheus metrics endpoint each runtime container serves.
METRICS_PORT = 9090
#: Port the rank-0 trainer listens on for the torch.distributed rendezvous.
RENDEZVOUS_PORT = 29500
#: Flower ports. Flower 1.42's SuperLink serves its Fleet, Control and ServerAppIo APIs on one
#: HTTP port; the runtime's ``superlink`` role splits them (``federated/superlink.py``): the
#: Fleet API alone on SUPERLINK_PORT (the SuperNodes'), the Control API alone on
#: SUPERLINK_CONTROL_PORT (the submitter's), everything on SUPERLINK_INTERNAL_PORT, bound to
#: 127.0.0.1 for the SuperExec and ServerApp inside the SuperLink's pod.
SUPERLINK_PORT = 9092
SUPERLINK_CONTROL_PORT = 9093
SUPERNODE_RUNTIME_PORT = 9094
SUPERLINK_INTERNAL_PORT = 9095

#: Where the final report goes: the container's termination message (at most 4 KiB).
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT = 4096

#: Port the ``serve-model`` role listens on (owner side) for ``fetch-model`` (analyst side).
MODEL_SERVER_PORT = 9096
#: Port of a federation's live gauges: the ServerApp (inside the SuperLink's pod) serves the
#: rounds completed and each round's duration there, for the operator only
#: (``ppml_runtime.federated.metrics``).
FEDERATION_METRICS_PORT = 9097

#: Exit code for a config the runtime cannot honour (fail fast, never train).
EXIT_INVALID_CONFIG = 2
#: Exit code when the data found differs from what was declared (and paid for).
EXIT_DATA_MISMATCH = 3


class ContractModel(BaseModel):
    """Base for contract models: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


# ---------------------------------------------------------------------------------------------
# Exact decimal values
# ---------------------------------------------------------------------------------------------

#: Where tests (and devcluster) may redirect the termination message.
ENV_TERMINATION_MESSAGE_PATH = "PPML_TERMINATION_MESSAGE_PATH"

_DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"


def _decimal_from_number(value: object) -> object:
    """Accept ints and floats from Python callers, keeping the float's exact repr."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return repr(value)
    return value


#: A non-negative decimal number written as a string (exact on the wire, never a YAML float).
DecimalStr = Annotated[str, BeforeValidator(_decimal_from_number), Field(pattern=_DECIMAL_PATTERN)]


def decimal_of(value: str) -> Decimal:
    """Parse a contract decimal string exactly.

    Parameters
    ----------
    value
        A string matching the contract's decimal pattern, e.g. ``"1.1"`` or ``"1e-5"``.

    Returns
    -------
    Decimal
        The exact value.

    """
    return Decimal(value)


def exact_decimal_str(value: Fraction | float | int) -> str:
    """Write a number as a decimal string the contract accepts.

    A fraction such as a sampling rate ``batchSize / numRecords`` is first rounded to the nearest
    double (what the accountants and Opacus compute with) and written as that double's shortest
    round-tripping repr, so ``float(result)`` is exactly the double both sides use.

    Parameters
    ----------
    value
        The number to write (non-negative).

    Returns
    -------
    str
        A decimal string, e.g. ``"0.04453723034098817"``.

    """
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def sample_rate_of(batch_size: int, num_records: int) -> Fraction:
    """Return the Poisson sampling rate ``q = batchSize / numRecords`` exactly.

    ``numRecords`` is the size of the training split, the records DP-SGD samples from.
    """
    if num_records <= 0 or batch_size <= 0:
        raise ValueError("batchSize and numRecords must both be positive")
    return Fraction(batch_size, num_records)


def steps_per_epoch(sample_rate: Fraction | Decimal | float) -> int:
    """Return the optimizer steps in one Poisson "epoch": ``ceil(1 / q)``.

    With Poisson sampling each step draws every record independently with probability ``q``, so
    an epoch is defined by its expected coverage: ``ceil(1 / q)`` steps.
    """
    q = Fraction(sample_rate) if not isinstance(sample_rate, Fraction) else sample_rate
    if q <= 0 or q > 1:
        raise ValueError(f"sample rate {sample_rate} is not in (0, 1]")
    return math.ceil(1 / q)


def split_sizes(total: int, test_fraction: Decimal | str) -> tuple[int, int]:
    """Return ``(train, test)`` record counts of the deterministic train/test split.

    The test split holds ``ceil(total * testFraction)`` records (scikit-learn's rule) and the
    training split the rest. ``numRecords`` in the config is the ``train`` figure.

    Parameters
    ----------
    total
        Number of records in the whole data set.
    test_fraction
        The fraction held out for testing, in ``[0, 1)``.

    Returns
    -------
    tuple of int
        The training and test record counts.

    """
    frac = Decimal(test_fraction)
    if not Decimal(0) <= frac < Decimal(1):
        raise ValueError(f"testFraction {test_fraction} is not in [0, 1)")
    n_test = math.ceil(Decimal(total) * frac)
    return total - n_test, n_test


def total_for_train(num_train: int, test_fraction: Decimal | str) -> int:
    """Return the smallest whole-set size whose training split holds ``num_train`` records.

    Used to size synthetic data sets, whose declared ``numRecords`` is the training split.
    """
    total = num_train
    while split_sizes(total, test_fraction)[0] < num_train:
        total += 1
    if split_sizes(total, test_fraction)[0] != num_train:
        raise ValueError(f"no data set size splits into {num_train} training records")
    return total


# ---------------------------------------------------------------------------------------------
# The trainer config (written by the operator into a ConfigMap, read by the runtime)
# ---------------------------------------------------------------------------------------------

DataSource = Literal["Builtin", "Synthetic", "Volume"]
BuiltinName = Literal["Digits", "BreastCancer", "Mnist5k", "Iris", "Wine"]
VolumeFormat = Literal["Csv", "Npz", "Parquet"]
Architecture = Literal["LogisticRegression", "Mlp", "Cnn", "Custom"]
OptimizerName = Literal["Sgd", "Adam"]
#: Accountant names as Opacus spells them (``gdp`` is refused: it underestimates).
AccountantName = Literal["rdp", "prv"]
#: ``bookkeeping``: one backward pass, exact, for Linear models; ``ghost``: Opacus' fast gradient
#: clipping; ``hooks``: Opacus' per-sample gradients; ``auto``: the fastest that fits the model.
GradSampleMode = Literal["ghost", "hooks", "bookkeeping", "auto"]

#: Whole-set record counts of the built-in data sets (features, classes in the comments).
BUILTIN_DATASET_SIZES: dict[str, int] = {
    "Digits": 1797,  # 64 features (8x8 image), 10 classes
    "BreastCancer": 569,  # 30 features, 2 classes
    "Mnist5k": 5000,  # 784 features (28x28 image), 10 classes
    "Iris": 150,  # 4 features, 3 classes
    "Wine": 178,  # 13 features, 3 classes
}
#: Number of features and classes of the built-in data sets.
BUILTIN_DATASET_SHAPES: dict[str, tuple[int, int]] = {
    "Digits": (64, 10),
    "BreastCancer": (30, 2),
    "Mnist5k": (784, 10),
    "Iris": (4, 3),
    "Wine": (13, 3),
}


class JobRef(ContractModel):
    """The job this runtime works for (names its report and metrics)."""

    name: str
    namespace: str
    uid: str


class BuiltinData(ContractModel):
    """A data set that ships inside an installed package (never downloaded)."""

    name: BuiltinName


class SyntheticData(ContractModel):
    """A seeded synthetic classification problem; ``numRecords`` is its training split."""

    num_features: int = Field(ge=1, le=100_000)
    num_classes: int = Field(ge=2, le=10_000)
    seed: int = 0


class VolumeData(ContractModel):
    """A file on a mounted volume.

    Csv and Parquet: one row per record, the label in ``labelColumn``, every other column a
    numeric feature. Npz: the features in the array ``x`` (one record per row; more axes are
    flattened) and the labels in the array ``y``; ``labelColumn`` does not apply, as in the API.
    """

    path: str = Field(min_length=1)
    format: VolumeFormat
    label_column: str = "label"

    @model_validator(mode="after")
    def _check_label_column(self) -> VolumeData:
        # The default is what every dump of an Npz config writes back (exclude_none keeps it),
        # so only another column is refused: a config the operator wrote must load again.
        if self.format == "Npz" and self.label_column != "label":
            raise ValueError(
                "labelColumn applies to Csv and Parquet only; Npz reads arrays x and y"
            )
        return self


class DataConfig(ContractModel):
    """Where the records come from and how they are split.

    ``numRecords`` is the number of records in the *training split* (the records DP-SGD samples
    from, so ``sampleRate = batchSize / numRecords``). The runtime builds the split itself
    (:func:`split_sizes`, seeded by ``splitSeed``) and refuses to train (exit code
    ``EXIT_DATA_MISMATCH``) when the training split it builds has a different size.
    """

    source: DataSource
    builtin: BuiltinData | None = None
    synthetic: SyntheticData | None = None
    volume: VolumeData | None = None
    num_records: int = Field(ge=1)
    test_fraction: DecimalStr = "0.2"
    split_seed: int = 0

    @model_validator(mode="after")
    def _one_member(self) -> DataConfig:
        members = {"Builtin": self.builtin, "Synthetic": self.synthetic, "Volume": self.volume}
        if members[self.source] is None:
            raise ValueError(
                f"data.source is {self.source} but data.{self.source.lower()} is unset"
            )
        extra = [k for k, v in members.items() if v is not None and k != self.source]
        if extra:
            raise ValueError(f"data.source is {self.source} but data.{extra[0].lower()} is set too")
        if not Decimal(0) <= Decimal(self.test_fraction) < Decimal(1):
            raise ValueError(f"data.testFraction {self.test_fraction} is not in [0, 1)")
        return self

    @property
    def test_fraction_value(self) -> float:
        """``testFraction`` as a float."""
        return float(self.test_fraction)


class ModelConfig(ContractModel):
    """Which network to train; ``Custom`` loads ``importPath`` (``package.module:build_model``)."""

    architecture: Architecture
    hidden_units: list[int] = Field(default_factory=lambda: [128])
    import_path: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

    @model_validator(mode="after")
    def _custom_needs_path(self) -> ModelConfig:
        if self.architecture == "Custom" and not self.import_path:
            raise ValueError("model.architecture is Custom but model.importPath is unset")
        if any(h < 1 for h in self.hidden_units):
            raise ValueError("model.hiddenUnits must all be positive")
        return self


class TrainingParams(ContractModel):
    """Optimizer hyper-parameters; ``epochs`` is informational (``privacy.steps`` rules)."""

    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: DecimalStr
    optimizer: OptimizerName = "Sgd"
    momentum: DecimalStr = "0"
    seed: int = 0

    @property
    def learning_rate_value(self) -> float:
        """``learningRate`` as a float."""
        return float(self.learning_rate)

    @property
    def momentum_value(self) -> float:
        """``momentum`` as a float."""
        return float(self.momentum)


class PrivacyParams(ContractModel):
    """Exactly what the operator paid for: the runtime never takes more steps than ``steps``."""

    noise_multiplier: DecimalStr
    sample_rate: DecimalStr
    max_grad_norm: DecimalStr
    steps: int = Field(ge=1)
    delta: DecimalStr
    accountant: AccountantName = "rdp"
    charged_epsilon: DecimalStr
    grad_sample_mode: GradSampleMode = "auto"

    @model_validator(mode="after")
    def _ranges(self) -> PrivacyParams:
        if not Decimal(0) < Decimal(self.sample_rate) <= Decimal(1):
            raise ValueError(f"privacy.sampleRate {self.sample_rate} is not in (0, 1]")
        if not Decimal(0) < Decimal(self.delta) < Decimal(1):
            raise ValueError(f"privacy.delta {self.delta} is not in (0, 1)")
        if Decimal(self.max_grad_norm) <= 0:
            raise ValueError(f"privacy.maxGradNorm {self.max_grad_norm} must be positive")
        if Decimal(self.noise_multiplier) <= 0:
            raise ValueError(f"privacy.noiseMultiplier {self.noise_multiplier} must be positive")
        return self

    @property
    def noise_multiplier_value(self) -> float:
        """``noiseMultiplier`` (sigma) as a float."""
        return float(self.noise_multiplier)

    @property
    def sample_rate_value(self) -> float:
        """``sampleRate`` (q) as a float."""
        return float(self.sample_rate)

    @property
    def max_grad_norm_value(self) -> float:
        """``maxGradNorm`` (C) as a float."""
        return float(self.max_grad_norm)

    @property
    def delta_value(self) -> float:
        """``delta`` as a float."""
        return float(self.delta)

    @property
    def charged_epsilon_value(self) -> float:
        """``chargedEpsilon`` as a float."""
        return float(self.charged_epsilon)


class CheckpointConfig(ContractModel):
    """Where checkpoints go (a mounted volume); resuming never spends more than was charged."""

    dir: str = Field(min_length=1)


class DistributedConfig(ContractModel):
    """Data-parallel workers; each pod's rank and world size come from ``RANK``, ``WORLD_SIZE``."""

    workers: int = Field(default=1, ge=1, le=1024)


# ---------------------------------------------------------------------------------------------
# The release: what crosses from the data owner's namespace to the analyst's
# ---------------------------------------------------------------------------------------------

#: ``format`` of a delivered model's ``config.json``.
MODEL_FORMAT = "ppml.dev/model-v1"
#: ``format`` of a delivered model's ``model-card.json``.
MODEL_CARD_FORMAT = "ppml.dev/model-card-v1"
#: The files of a delivered model directory (flat; nothing else is ever served or fetched).
MODEL_WEIGHTS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "config.json"
MODEL_CARD_FILE = "model-card.json"
MODEL_README_FILE = "README.md"
MODEL_FILES: tuple[str, ...] = (
    MODEL_WEIGHTS_FILE,
    MODEL_CONFIG_FILE,
    MODEL_CARD_FILE,
    MODEL_README_FILE,
)
#: Gaussian mechanisms one metric release runs, each with noise multiplier
#: ``release.metricsNoiseMultiplier`` (the test accuracy's sum and the clipped test loss's sum);
#: the operator charges this many ``GaussianDpEvent(metricsNoiseMultiplier)`` for a release.
RELEASE_GAUSSIAN_EVENTS = 2
#: Model-card keys the runtime writes itself; ``release.card`` may not set them.
MODEL_CARD_RUNTIME_KEYS: frozenset[str] = frozenset(
    {
        "format",
        "job",
        "jobNamespace",
        "created",
        "architecture",
        "epsilon",
        "chargedEpsilon",
        "delta",
        "accountant",
        "steps",
        "noiseMultiplier",
        "maxGradNorm",
        "sampleRate",
        "trainRecords",
        "metricsRelease",
        "releasedTestAccuracy",
        "releasedTestLoss",
        "modelSha256",
    }
)


class ReleaseConfig(ContractModel):
    """What the trainer releases towards the analyst; every part is optional.

    ``modelDir`` is where the trainer (rank 0) writes the delivered model when training ends
    (operator-owned storage, e.g. ``/output/model``; unset: no model is written). The model is a
    DP result by post-processing. ``metricsNoiseMultiplier`` is the sigma of the Gaussian
    mechanism that releases the test accuracy and loss (:mod:`ppml_runtime.release.mechanism`;
    unset: no metric is released); each record's test loss is clipped to ``[0, lossBound]``
    first. ``card`` holds the static model-card fields the operator gives (``dataset``,
    ``budget``, ``runtimeImage``, ``runtimeImageDigest``, ...); the keys in
    ``MODEL_CARD_RUNTIME_KEYS`` are the runtime's own.
    """

    model_dir: str | None = Field(default=None, min_length=1)
    metrics_noise_multiplier: DecimalStr | None = None
    loss_bound: DecimalStr = "10"
    card: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ranges(self) -> ReleaseConfig:
        sigma = self.metrics_noise_multiplier
        if sigma is not None and Decimal(sigma) <= 0:
            raise ValueError(f"release.metricsNoiseMultiplier {sigma} must be positive")
        if Decimal(self.loss_bound) <= 0:
            raise ValueError(f"release.lossBound {self.loss_bound} must be positive")
        taken = sorted(MODEL_CARD_RUNTIME_KEYS & set(self.card))
        if taken:
            raise ValueError(
                f"release.card sets {', '.join(taken)}, which the runtime writes itself"
            )
        return self

    @property
    def metrics_noise_multiplier_value(self) -> float | None:
        """``metricsNoiseMultiplier`` (sigma) as a float, or ``None`` when unset."""
        sigma = self.metrics_noise_multiplier
        return None if sigma is None else float(sigma)

    @property
    def loss_bound_value(self) -> float:
        """``lossBound`` (B) as a float."""
        return float(self.loss_bound)


def declared_test_records(data: DataConfig) -> int:
    """Return the size of the test split as the config declares it (public, data-independent).

    For built-in and synthetic data it is exactly the split the runtime builds. For volume data
    the whole-set size is not declared: this is the test split of the smallest set whose
    training split holds ``numRecords`` records, which may be one record short of the split
    found (two set sizes can split into the same training count). The metric release divides
    by this figure so that the division stays post-processing of the noisy sums.
    """
    if data.source == "Builtin" and data.builtin is not None:
        total = BUILTIN_DATASET_SIZES[data.builtin.name]
    else:
        total = total_for_train(data.num_records, data.test_fraction)
    return split_sizes(total, data.test_fraction)[1]


#: Relative tolerance between ``sampleRate`` and ``batchSize / numRecords``.
SAMPLE_RATE_RTOL = 1e-9


class TrainerConfig(ContractModel):
    """The config of one DP-SGD trainer (``python -m ppml_runtime train --config PATH``)."""

    contract_version: int = CONTRACT_VERSION
    job: JobRef
    data: DataConfig
    model: ModelConfig
    training: TrainingParams
    privacy: PrivacyParams
    checkpoint: CheckpointConfig | None = None
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    metrics_port: int = Field(default=METRICS_PORT, ge=0, le=65535)
    release: ReleaseConfig | None = None

    @model_validator(mode="after")
    def _coherent(self) -> TrainerConfig:
        if self.contract_version != CONTRACT_VERSION:
            raise ValueError(
                f"contractVersion {self.contract_version} is not {CONTRACT_VERSION}, the one this "
                "runtime speaks"
            )
        expected = sample_rate_of(self.training.batch_size, self.data.num_records)
        paid = Fraction(Decimal(self.privacy.sample_rate))
        if abs(paid - expected) > expected * Fraction(SAMPLE_RATE_RTOL):
            raise ValueError(
                f"privacy.sampleRate {self.privacy.sample_rate} is not training.batchSize / "
                f"data.numRecords = {self.training.batch_size}/{self.data.num_records}"
            )
        return self


def config_digest(text: str) -> str:
    """Return the SHA-256 (hex) of a rendered config, as the pod's ``PPML_CONFIG_SHA256``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ConfigTamperedError(ValueError):
    """The config file is not the one the operator rendered for this job."""


def read_pinned_config(path: str | Path) -> str:
    """Read a config file and check it against ``PPML_CONFIG_SHA256`` when the pod sets it.

    Raises
    ------
    ConfigTamperedError
        When the digest differs: the config was replaced after the operator rendered it.

    """
    text = Path(path).read_text(encoding="utf-8")
    expected = os.environ.get(ENV_CONFIG_SHA256)
    if expected and config_digest(text) != expected:
        raise ConfigTamperedError(
            f"the config at {path} is not the one the operator rendered and charged for this "
            f"job (sha256 {config_digest(text)[:12]}..., expected {expected[:12]}...): "
            "refusing to touch any data"
        )
    return text


def load_config(path: str | Path) -> TrainerConfig:
    """Read and validate a trainer config (JSON, or YAML when PyYAML is installed).

    Parameters
    ----------
    path
        The config file.

    Returns
    -------
    TrainerConfig
        The validated config.

    Raises
    ------
    OSError
        When the file cannot be read.
    pydantic.ValidationError
        When the config is not a valid contract config.

    """
    text = read_pinned_config(path)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        import yaml  # a ConfigMap may hold YAML; PyYAML is a core dependency

        raw = yaml.safe_load(text)
    config = TrainerConfig.model_validate(raw)
    uid = os.environ.get(ENV_JOB_UID)
    if uid and config.job.uid != uid:
        raise ConfigTamperedError(
            f"the config at {path} belongs to job UID {config.job.uid}, not to this pod's job "
            f"{uid}: refusing to touch any data")
    return config


def dump_config(config: TrainerConfig) -> str:
    """Serialise a trainer config as the JSON the operator writes into the ConfigMap."""
    return config.model_dump_json(by_alias=True, exclude_none=True, indent=2)


# ---------------------------------------------------------------------------------------------
# The report (the trainer container's termination message)
# ---------------------------------------------------------------------------------------------

ReportStatus = Literal["ok", "error"]


class TrainingReport(ContractModel):
    """What the trainer reports when it ends, in at most ``TERMINATION_MESSAGE_LIMIT`` bytes.

    ``epsilon`` is the runtime's own accountant's figure for the steps it took, at the charged
    ``delta``; the operator compares it with the epsilon it charged. ``testAccuracy`` and
    ``testLoss`` are the exact figures on the test split: they are not differentially private and
    stay on the data owner's side. ``releasedTestAccuracy`` and ``releasedTestLoss`` are their
    releases through the charged Gaussian mechanism (``release.metricsNoiseMultiplier``), and
    ``modelSha256`` the SHA-256 (hex) of the delivered ``model.safetensors``; these may cross to
    the analyst. Figures must be finite: JSON
    from Python may carry ``NaN`` and ``Infinity``, which no comparison can order, so a report
    holding them is refused (a :class:`pydantic.ValidationError` naming the field) rather than
    parsed into a value whose comparison raises later.
    """

    contract_version: int = CONTRACT_VERSION
    status: ReportStatus
    steps_completed: int = 0
    epochs: float = 0.0
    epsilon: FiniteFloat | None = None
    delta: FiniteFloat | None = None
    accountant: AccountantName | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    released_test_accuracy: FiniteFloat | None = None
    released_test_loss: FiniteFloat | None = None
    model_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    train_records: int | None = None
    test_records: int | None = None
    split_seed: int | None = None
    wall_seconds: float | None = None
    device: str | None = None
    grad_sample_mode: Literal["ghost", "hooks", "bookkeeping"] | None = None
    resumed_from_step: int | None = None
    #: Steps spent in an earlier attempt whose progress was lost (their privacy cost is counted).
    steps_discarded: int | None = None
    error: str | None = None


def dump_report(report: TrainingReport, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """Serialise a report as compact JSON that fits in ``limit`` bytes (UTF-8).

    Only the free-text ``error`` is ever shortened (with a trailing ellipsis); every figure is
    kept.

    Parameters
    ----------
    report
        The report.
    limit
        The byte limit (the termination message's 4 KiB by default).

    Returns
    -------
    str
        The JSON text.

    """

    def encode(r: TrainingReport) -> str:
        return json.dumps(
            r.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":")
        )

    text = encode(report)
    if len(text.encode("utf-8")) <= limit:
        return text
    message = report.error or ""
    while message:
        over = len(text.encode("utf-8")) - limit
        message = message[: max(0, len(message) - max(over, 1) - 1)]
        text = encode(report.model_copy(update={"error": message + "…"}))
        if len(text.encode("utf-8")) <= limit:
            return text
    text = encode(report.model_copy(update={"error": None}))
    if len(text.encode("utf-8")) > limit:
        raise ValueError(f"report does not fit in {limit} bytes even without its error message")
    return text


def parse_report(text: str) -> TrainingReport:
    """Parse a termination message written by :func:`dump_report`."""
    return TrainingReport.model_validate_json(text)


# ---------------------------------------------------------------------------------------------
# Live progress (the Prometheus metrics endpoint)
# ---------------------------------------------------------------------------------------------

METRIC_STEP = "ppml_training_step"
METRIC_EPOCH = "ppml_training_epoch"
METRIC_LOSS = "ppml_training_loss"
METRIC_EPSILON = "ppml_training_epsilon"
METRIC_TOTAL_STEPS = "ppml_training_total_steps"


class ProgressSnapshot(ContractModel):
    """Live training progress as served on the metrics endpoint (gauges, no labels)."""

    step: int = 0
    epoch: float = 0.0
    loss: float | None = None
    epsilon: float | None = None
    total_steps: int | None = None

    #: Metric name of each field.
    METRIC_NAMES: ClassVar[dict[str, str]] = {
        "step": METRIC_STEP,
        "epoch": METRIC_EPOCH,
        "loss": METRIC_LOSS,
        "epsilon": METRIC_EPSILON,
        "total_steps": METRIC_TOTAL_STEPS,
    }


_SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>(?:[^"}]|"(?:[^"\\]|\\.)*")*)\})?'
    r"\s+(?P<value>\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def gauge_samples(metrics_text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """Yield ``(name, labels, value)`` of every sample in Prometheus text exposition.

    Standard library only (the operator reads these without ``prometheus_client``). Comments,
    malformed lines and NaN values are skipped; a sample's timestamp is ignored.

    Parameters
    ----------
    metrics_text
        The body of ``GET /metrics``.

    Yields
    ------
    tuple of (str, dict of str to str, float)
        The metric name, its labels (empty for a plain gauge) and its value.

    """
    for line in metrics_text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        if math.isnan(value):
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\")
                  for k, v in _LABEL.findall(match["labels"] or "")}
        yield match["name"], labels, value


def parse_progress(metrics_text: str) -> ProgressSnapshot:
    """Read a :class:`ProgressSnapshot` from Prometheus text exposition (stdlib only).

    Parameters
    ----------
    metrics_text
        The body of ``GET /metrics`` on the runtime's metrics port.

    Returns
    -------
    ProgressSnapshot
        The gauges found; missing ones keep their defaults, NaN values read as unset.

    """
    by_name = {v: k for k, v in ProgressSnapshot.METRIC_NAMES.items()}
    fields: dict[str, object] = {}
    for name, labels, value in gauge_samples(metrics_text):
        if name in by_name and not labels:
            key = by_name[name]
            integral = key in ("step", "total_steps") and math.isfinite(value)
            fields[key] = int(value) if integral else value
    return ProgressSnapshot.model_validate(fields)
