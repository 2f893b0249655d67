"""PrivateDataset: a data owner's declaration of what a budget protects and who may use it.

The data owner applies it in their own namespace, next to the data (a claim, or a built-in set
for demos) and the PrivacyBudget that guards it. A job names protected data only through
``spec.datasetRef``; the operator then charges the dataset's budget (never one the job picks),
runs the pods that touch the data in the dataset's namespace, and admits the job only if the
dataset's access policy allows it (``reconcile/dataset.py``):

- ``access.namespaces`` is the owner's half of a double opt-in, as Gateway API's ReferenceGrant:
  a job in another namespace names the dataset, and the dataset names that namespace;
- ``access.images`` pins the runtime images that may touch the data, by digest (unset: only the
  operator's configured runtime);
- ``access.importPaths`` lists the model builders (``model.importPath``) the owner approved;
- ``access.maxEpsilonPerJob`` caps what one job may take;
- ``access.allowNonPrivate`` must be set before a FederatedJob without DP may read it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from . import cel_eval
from .common import (
    API_VERSION,
    ApiModel,
    BudgetRef,
    DecimalBounds,
    DnsLabel,
    immutable,
)
from .federated import FederatedData

IMAGE_DIGEST_PATTERN = r"^[^@\s]+@sha256:[a-f0-9]{64}$"
"""A container image pinned by digest: ``registry/repository@sha256:<64 hex digits>``."""

IMPORT_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
"""A model builder, ``package.module:function`` (the pattern of ``model.importPath``)."""

PinnedImage = Annotated[str, StringConstraints(pattern=IMAGE_DIGEST_PATTERN, max_length=512)]
ImportPath = Annotated[str, StringConstraints(pattern=IMPORT_PATH_PATTERN, max_length=256)]
MaxEpsilon = Annotated[str, DecimalBounds("maxEpsilonPerJob", gt="0", le="1000")]


class DatasetAccess(ApiModel):
    """Who may draw on the dataset, with which code, and how much one job may spend."""

    namespaces: Annotated[list[DnsLabel], Field(max_length=256)] | None = Field(
        default=None,
        description="namespaces are the namespaces whose jobs may name this dataset in "
        "spec.datasetRef, besides the dataset's own: the owner's half of a double opt-in "
        "(the job names the dataset, the dataset names the job's namespace). Unset: only jobs "
        "in the dataset's own namespace.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    images: Annotated[list[PinnedImage], Field(max_length=64)] | None = Field(
        default=None,
        description="images are the runtime images allowed to touch the data, each pinned by "
        "digest (registry/repository@sha256:...). A job's spec.runtime.image must be one of "
        "them. Unset: only the operator's configured runtime image (a job leaves "
        "spec.runtime.image unset).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    import_paths: Annotated[list[ImportPath], Field(max_length=64)] | None = Field(
        default=None,
        description="importPaths are the model builders (package.module:function) a job with "
        "model.architecture Custom may use on this data. The built-in architectures are always "
        "allowed. Unset: no Custom model.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    max_epsilon_per_job: MaxEpsilon | None = Field(
        default=None,
        description="maxEpsilonPerJob is the largest ε one job may be charged on this dataset, "
        "a decimal (quote fractions: \"0.5\"). Unset: only the budget limits it.",
    )
    allow_non_private: bool = Field(
        default=False,
        description="allowNonPrivate lets a FederatedJob with privacy.mode None read the data "
        "(its updates are not differentially private). Defaults to false: such a job is "
        "refused.",
    )


_DATASET_RULES: list[cel_eval.Rule] = [
    ("self.data.source != 'Synthetic'",
     "a PrivateDataset protects real records: data.source must be Builtin or Volume",
     ".data.source"),
]
"""The spec's CEL rules: the CRD carries them and the model evaluates the same text."""


class PrivateDatasetSpec(ApiModel):
    """The data, the budget that guards it, and its access policy."""

    budget_ref: Annotated[BudgetRef, immutable("spec.budgetRef")] = Field(
        description="budgetRef names the PrivacyBudget, in the dataset's namespace, that every "
        "job reading this data is charged to. Immutable."
    )
    data: Annotated[FederatedData, immutable("spec.data")] = Field(
        description="data is where the records are (a claim in this namespace, mounted "
        "read-only into the pods the operator runs here, or a built-in set for demos, "
        "optionally one disjoint shard of it: data.partition), their count as the owner "
        "declares it (the runtime refuses to train if it differs) and the train/test split. "
        "A partitioned dataset serves FederatedJob clients only. Immutable: charges already "
        "on the budget were computed from it."
    )
    access: DatasetAccess = Field(
        default_factory=DatasetAccess,
        description="access is who may draw on the data and with which code; changes apply "
        "to jobs admitted afterwards.",
    )
    description: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="description says what the records are, for people."
    )

    model_config = ConfigDict(json_schema_extra=cel_eval.schema_extra(_DATASET_RULES))

    @model_validator(mode="after")
    def _check(self) -> PrivateDatasetSpec:
        cel_eval.check(self, _DATASET_RULES)
        return self


class PrivateDataset(ApiModel):
    """PrivateDataset declares data a budget protects, and who may train on it with what code."""

    api_version: Literal["ppml.dev/v1alpha1"] = Field(
        default=API_VERSION, description="apiVersion is ppml.dev/v1alpha1."
    )
    kind: Literal["PrivateDataset"] = Field(
        default="PrivateDataset", description="kind is PrivateDataset."
    )
    metadata: dict[str, object] = Field(
        default_factory=dict, description="metadata is the standard object metadata."
    )
    spec: PrivateDatasetSpec = Field(description="spec is the data owner's declaration.")
