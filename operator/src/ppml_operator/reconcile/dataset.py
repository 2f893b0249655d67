"""Resolve a job against the data it reads: the PrivateDataset's budget, namespace and policy.

Pure: the caller (``handlers/jobs.py``, observe) reads the dataset and the claims that datasets
of the job's namespace protect, and this module decides. A job naming ``spec.datasetRef`` is
*resolved* into the job the rest of the lifecycle prices, renders and charges: its
``spec.data`` is the dataset's (the owner's declared count and split, never the analyst's) and
its ``spec.budgetRef`` the dataset's budget, which lives in the dataset's namespace, where the
pods that touch the data run too. A job with inline data is checked against the claims that
the PrivateDatasets of its namespace protect, so nobody reaches protected records by naming
the claim instead of the dataset.

What the analyst reads in a refusal is kept generic: a dataset that does not exist and one that
does not grant the analyst's namespace read the same, so the condition is no oracle for what a
data owner holds (``docs/concepts.md``, the threat model).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from ppml_operator.render.common import CLIENT_DATASETS, DATASET, EXEC_NAMESPACE, budget_key

Obj = dict[str, Any]

DATASET_NOT_GRANTED = "DatasetNotGranted"
"""Admitted=False reason: no dataset of that name grants the job's namespace (or none exists)."""

IMAGE_NOT_APPROVED = "ImageNotApproved"
"""Admitted=False reason: the runtime image is not one the data owner approved."""

MODEL_NOT_APPROVED = "ModelNotApproved"
"""Admitted=False reason: ``model.importPath`` is not a builder the data owner approved."""

NON_PRIVATE_NOT_ALLOWED = "NonPrivateNotAllowed"
"""Admitted=False reason: a job without DP reads data whose owner does not allow it."""

EPSILON_ABOVE_DATASET_LIMIT = "EpsilonAboveDatasetLimit"
"""Admitted=False reason: the job costs more than the dataset lets one job take."""

CLAIM_PROTECTED = "ClaimProtected"
"""Admitted=False reason: inline data or a checkpoint names a claim a PrivateDataset protects."""

DATASETS_OVERLAP = "DatasetsOverlap"
"""Admitted=False reason: two silos of one federation would read the same records."""

DATASET_UNSUITABLE = "DatasetUnsuitable"
"""Admitted=False reason: the dataset cannot serve this kind of job (a partitioned dataset
serves FederatedJob clients only)."""


@dataclass(frozen=True)
class Resolved:
    """The job as the lifecycle sees it, and where its budget and pods live.

    Attributes
    ----------
    job
        The effective job: for a job on a dataset, a copy whose ``spec.data`` and
        ``spec.budgetRef`` are the dataset's (and ``spec.datasetRef`` gone, recorded in the
        metadata under :data:`DATASET`); otherwise the job itself.
    budget_namespace
        Where the budgets it charges live (the dataset's namespace, or the job's).
    exec_namespace
        Where the pods that touch the data, and every other child but the delivery, run.
    dataset
        The PrivateDataset, for a job that names one.

    """

    job: Obj
    budget_namespace: str
    exec_namespace: str
    dataset: Obj | None = None
    datasets: tuple[tuple[str, Obj], ...] = ()
    """``(budget key, PrivateDataset)`` of every dataset a federation's clients name: the
    charge on that budget is the one the dataset's ``maxEpsilonPerJob`` limits."""

    @property
    def remote(self) -> bool:
        """Whether the job's children live in another namespace than the job."""
        return bool(self.exec_namespace != self.job["metadata"]["namespace"])


@dataclass(frozen=True)
class Refused:
    """Why the dataset's policy refuses the job: a reason, the field, a sentence for the job."""

    reason: str
    field: str
    message: str


def client_dataset_refs(job: Obj) -> list[tuple[str, str]]:
    """Return ``(namespace, name)`` of the PrivateDataset each client of a federation names."""
    namespace = str(job["metadata"]["namespace"])
    return [(str(ref.get("namespace") or namespace), str(ref["name"]))
            for ref in (client.get("datasetRef") for client in
                        (job.get("spec") or {}).get("clients") or []) if ref]


def dataset_ref(job: Obj) -> tuple[str, str] | None:
    """Return ``(namespace, name)`` of the PrivateDataset a job names, if it names one."""
    ref = (job.get("spec") or {}).get("datasetRef")
    if not ref:
        return None
    return str(ref.get("namespace") or job["metadata"]["namespace"]), str(ref["name"])


#: Arrival keys of datasets read ``(namespace, "PrivateDataset/<name>")``; budgets' are
#: ``(namespace, <budget name>)`` (a budget's name cannot contain "/").
DATASET_KEY_PREFIX = "PrivateDataset/"


def dataset_key(namespace: str, name: str) -> tuple[str, str]:
    """Return the arrival key of jobs on the PrivateDataset ``namespace/name``."""
    return (namespace, f"{DATASET_KEY_PREFIX}{name}")


def arrival_keys(namespace: str, spec: Obj, budget_names: Iterable[str]) -> list[tuple[str, str]]:
    """Return the keys under which a job waits its turn (admission in arrival order).

    A job on a dataset waits under the dataset (its budget is not known before the dataset is
    read, and an index function reads nothing); a job with inline data under its budgets.
    :func:`keys_ahead` joins the two through the datasets' budgets when the order is checked.
    """
    refs = [spec["datasetRef"]] if spec.get("datasetRef") else [
        client["datasetRef"] for client in spec.get("clients") or [] if client.get("datasetRef")]
    if refs:
        return sorted({dataset_key(str(ref.get("namespace") or namespace), str(ref["name"]))
                       for ref in refs})
    return [(namespace, name) for name in budget_names]


def keys_ahead(keys: Iterable[tuple[str, str]],
               budget_of: Mapping[tuple[str, str], tuple[str, str]]) -> list[tuple[str, str]]:
    """Return every key under which an older job holds back a job waiting under ``keys``.

    ``budget_of`` maps a dataset's key to its budget's (the operator's index of datasets).
    Jobs draw on one budget through any of its datasets or with inline data, so a job waits
    behind older ones under its own keys, under the budgets its datasets charge, and under
    every other dataset on those budgets. A dataset the index does not know (yet) keeps its
    own key only.
    """
    own = set(keys)
    budgets = {budget_of.get(key, key) for key in own}
    on_same_budgets = {key for key, budget in budget_of.items() if budget in budgets}
    return sorted(own | budgets | on_same_budgets)


def protected_claims(datasets: Iterable[Obj]) -> dict[str, str]:
    """Return ``claim -> dataset`` for every claim the given datasets (one namespace) protect."""
    out: dict[str, str] = {}
    for ds in datasets:
        volume = ((ds.get("spec") or {}).get("data") or {}).get("volume") or {}
        if volume.get("claimName"):
            out.setdefault(str(volume["claimName"]), str(ds["metadata"]["name"]))
    return out


def _claims_of(spec: Obj) -> list[tuple[str, str]]:
    """Return ``(field, claim)`` for every claim a job's spec mounts by name."""
    out = []
    volume = (spec.get("data") or {}).get("volume") or {}
    if volume.get("claimName"):
        out.append(("spec.data.volume.claimName", str(volume["claimName"])))
    checkpoint = spec.get("checkpoint") or {}
    if checkpoint.get("claimName"):
        out.append(("spec.checkpoint.claimName", str(checkpoint["claimName"])))
    for i, client in enumerate(spec.get("clients") or []):
        cv = (client.get("data") or {}).get("volume") or {}
        if cv.get("claimName"):
            out.append((f"spec.clients[{i}].data.volume.claimName", str(cv["claimName"])))
    return out


def mounts_claims(job: Obj) -> bool:
    """Return whether a job's spec mounts any claim by name (inline data, checkpoints)."""
    return bool(_claims_of(job.get("spec") or {}))


def resolve(job: Obj, dataset: Obj | None, protected: Mapping[str, str], *,
            enforce: bool = True) -> Resolved | Refused:
    """Resolve a job against the dataset it names, or check its inline data's claims.

    Parameters
    ----------
    job
        The job as stored.
    dataset
        The PrivateDataset ``spec.datasetRef`` names, or None (not found, or no reference).
    protected
        ``claim -> dataset`` for the claims protected in the job's own namespace.
    enforce
        Apply the access policy (before admission). An admitted job is only resolved.

    Returns
    -------
    Resolved or Refused
        The effective job and its namespaces, or why the policy refuses it.

    """
    meta = job["metadata"]
    namespace = str(meta["namespace"])
    spec = job.get("spec") or {}
    ref = dataset_ref(job)
    if ref is None:
        for field_path, claim in _claims_of(spec):
            if claim in protected:
                return Refused(CLAIM_PROTECTED, field_path,
                               f"claim {claim} holds records that PrivateDataset "
                               f"{protected[claim]} protects: name the dataset in "
                               "spec.datasetRef instead")
        return Resolved(job, namespace, namespace)
    ds_namespace, ds_name = ref
    not_granted = Refused(
        DATASET_NOT_GRANTED, "spec.datasetRef",
        f"PrivateDataset {ds_namespace}/{ds_name} does not exist or does not grant namespace "
        f"{namespace} (its access.namespaces)")
    if dataset is None:
        return not_granted
    ds_spec = dataset.get("spec") or {}
    access = ds_spec.get("access") or {}
    refused = _policy(job, namespace, ds_namespace, ds_name, access, not_granted) \
        if enforce else None
    if refused is None and enforce and (ds_spec.get("data") or {}).get("partition"):
        refused = Refused(DATASET_UNSUITABLE, "spec.datasetRef",
                          f"PrivateDataset {ds_namespace}/{ds_name} is one shard of a "
                          "partitioned set: it serves FederatedJob clients only")
    if refused is not None:
        return refused
    effective = copy.deepcopy(job)
    effective_spec = effective.setdefault("spec", {})
    effective_spec["data"] = copy.deepcopy(ds_spec.get("data") or {})
    effective_spec["budgetRef"] = {"name": str((ds_spec.get("budgetRef") or {}).get("name"))}
    effective_spec.pop("datasetRef", None)  # now a job with inline data, as far as pricing goes
    effective["metadata"][DATASET] = f"{ds_namespace}/{ds_name}"
    if ds_namespace != namespace:
        effective["metadata"][EXEC_NAMESPACE] = ds_namespace
    return Resolved(effective, ds_namespace, ds_namespace, dataset)


def _policy(job: Obj, namespace: str, ds_namespace: str, ds_name: str, access: Obj,
            not_granted: Refused) -> Refused | None:
    """Apply a dataset's access policy to a job; return the refusal, if any."""
    spec = job.get("spec") or {}
    if ds_namespace != namespace and namespace not in (access.get("namespaces") or []):
        return not_granted
    image = (spec.get("runtime") or {}).get("image")
    if image is not None and image not in (access.get("images") or []):
        allowed = "the images in its access.images" if access.get("images") else \
            "only the operator's runtime image (leave spec.runtime.image unset)"
        return Refused(IMAGE_NOT_APPROVED, "spec.runtime.image",
                       f"image {image} is not approved by PrivateDataset "
                       f"{ds_namespace}/{ds_name}: it allows {allowed}")
    import_path = (spec.get("model") or {}).get("importPath")
    if import_path is not None and import_path not in (access.get("importPaths") or []):
        return Refused(MODEL_NOT_APPROVED, "spec.model.importPath",
                       f"model builder {import_path} is not approved by PrivateDataset "
                       f"{ds_namespace}/{ds_name} (its access.importPaths)")
    privacy = spec.get("privacy") or {}
    # A FederatedJob's privacy.mode defaults to None: an unset mode is no DP too.
    mode = privacy.get("mode") or ("None" if job.get("kind") == "FederatedJob" else None)
    if mode == "None" and not access.get("allowNonPrivate"):
        return Refused(NON_PRIVATE_NOT_ALLOWED, "spec.privacy.mode",
                       f"PrivateDataset {ds_namespace}/{ds_name} does not allow jobs without "
                       "differential privacy (its access.allowNonPrivate)")
    return None


def resolve_federation(job: Obj, datasets: Mapping[tuple[str, str], Obj | None], *,
                       operator_namespace: str, enforce: bool = True) -> Resolved | Refused:
    """Resolve a FederatedJob whose clients name PrivateDatasets (``clients[].datasetRef``).

    Each client is checked against its own dataset with the policy a PrivateTrainingJob meets
    (grant, images, model builders, non-private use); the per-job ε limit is checked once the
    job is priced (:func:`epsilon_refusal`, per charge). Two clients may not read the same
    records (the same dataset, claim, or overlapping shards of a built-in set).

    The effective job keeps the spec as written and records, in its metadata under
    :data:`~ppml_operator.render.common.CLIENT_DATASETS`, each client's dataset namespace,
    budget and data: the price charges each dataset's budget, in the dataset's namespace, and
    each silo's SuperNode runs there. The server side (SuperLink, submitter) runs in
    ``operator_namespace``, which no analyst reaches: without SecAgg+ the server sees every
    silo's clipped update.

    Parameters
    ----------
    job
        The FederatedJob as stored.
    datasets
        The PrivateDataset each ``(namespace, name)`` of :func:`client_dataset_refs` names, or
        None where it does not exist.
    operator_namespace
        Where the server side runs.
    enforce
        Apply the access policies (before admission). An admitted job is only resolved.

    """
    namespace = str(job["metadata"]["namespace"])
    resolved: dict[str, Obj] = {}
    by_budget: list[tuple[str, Obj]] = []
    seen: list[tuple[str, str, Obj]] = []  # (field, dataset "ns/name", data)
    for i, client in enumerate((job.get("spec") or {}).get("clients") or []):
        ref = client.get("datasetRef")
        if not ref:
            continue
        field_path = f"spec.clients[{i}].datasetRef"
        ds_namespace, ds_name = str(ref.get("namespace") or namespace), str(ref["name"])
        found = datasets.get((ds_namespace, ds_name))
        not_granted = Refused(
            DATASET_NOT_GRANTED, field_path,
            f"PrivateDataset {ds_namespace}/{ds_name} does not exist or does not grant "
            f"namespace {namespace} (its access.namespaces)")
        if found is None:
            return not_granted
        ds_spec = found.get("spec") or {}
        if enforce:
            refused = _policy(job, namespace, ds_namespace, ds_name,
                              ds_spec.get("access") or {}, not_granted)
            if refused is not None:
                return refused
        data = copy.deepcopy(ds_spec.get("data") or {})
        key = f"{ds_namespace}/{ds_name}"
        for other_field, other_key, other_data in seen:
            why = _overlap(key, data, other_key, other_data)
            if enforce and why:
                return Refused(DATASETS_OVERLAP, field_path,
                               f"{why}: it and {other_field} would read the same records, "
                               "which one charge per silo does not cover")
        seen.append((field_path, key, data))
        budget = str((ds_spec.get("budgetRef") or {}).get("name"))
        resolved[str(client["name"])] = {"namespace": ds_namespace, "dataset": ds_name,
                                         "budget": budget, "data": data}
        by_budget.append((budget_key(ds_namespace, budget, namespace), found))
    effective = copy.deepcopy(job)
    effective["metadata"][CLIENT_DATASETS] = resolved
    effective["metadata"][EXEC_NAMESPACE] = operator_namespace
    return Resolved(effective, namespace, operator_namespace, None, tuple(by_budget))


def _overlap(key: str, data: Obj, other_key: str, other: Obj) -> str | None:
    """Return why two silos' declared data would share records, or None when disjoint."""
    if key == other_key:
        return f"PrivateDataset {key} is named twice"
    ns, other_ns = key.split("/")[0], other_key.split("/")[0]
    volume, other_volume = data.get("volume") or {}, other.get("volume") or {}
    if volume and other_volume and ns == other_ns and \
            volume.get("claimName") == other_volume.get("claimName") and \
            (volume.get("path") or "") == (other_volume.get("path") or ""):
        return f"PrivateDataset {key} declares the same claim and path as {other_key}"
    builtin, other_builtin = data.get("builtin") or {}, other.get("builtin") or {}
    if not builtin or builtin.get("name") != other_builtin.get("name"):
        return None
    part, other_part = data.get("partition") or {}, other.get("partition") or {}
    same_cut = bool(part) and bool(other_part) and all(
        str(part.get(k, d)) == str(other_part.get(k, d))
        for k, d in (("scheme", "Iid"), ("count", None), ("seed", 0), ("alpha", None)))
    if same_cut and part.get("index") != other_part.get("index"):
        return None
    return (f"PrivateDataset {key} and {other_key} declare built-in set {builtin.get('name')} "
            "without disjoint shards of one partitioning")


def epsilon_refusal(resolved: Resolved, charged: Iterable[tuple[str, str]]) -> Refused | None:
    """Refuse a job whose charge exceeds a dataset's ``access.maxEpsilonPerJob``.

    ``charged`` is ``(budget, epsilon)`` of each charge the job's price holds; each charge is
    held to the limit of the dataset whose budget it is (a federation's clients: per dataset).
    """
    limits = dict(resolved.datasets)
    for budget, epsilon in charged:
        dataset = limits.get(budget, resolved.dataset)
        if dataset is None:
            continue
        refused = _epsilon_over(dataset, epsilon)
        if refused is not None:
            return refused
    return None


def _epsilon_over(dataset: Obj, epsilon: str) -> Refused | None:
    limit = ((dataset.get("spec") or {}).get("access") or {}).get("maxEpsilonPerJob")
    if limit is None:
        return None
    ds = dataset["metadata"]
    try:
        over = Decimal(str(epsilon)) > Decimal(str(limit))
    except InvalidOperation:
        over = True
    if not over:
        return None
    return Refused(EPSILON_ABOVE_DATASET_LIMIT, "spec.privacy",
                   f"the job costs epsilon {epsilon}, more than the {limit} "
                   f"PrivateDataset {ds['namespace']}/{ds['name']} lets one job take "
                   "(its access.maxEpsilonPerJob)")


def lost_resolution(job: Obj) -> Resolved:
    """Return where an admitted job whose PrivateDataset is gone keeps its budget and children.

    Its budget and pods live in the dataset's namespace (a job on a dataset of its own
    namespace: there); the charges to settle are named in the job's status
    (:func:`charged_budgets`), since the price cannot be computed without the dataset's data.
    """
    namespace = str(job["metadata"]["namespace"])
    ref = dataset_ref(job)
    where = ref[0] if ref is not None else namespace
    effective = copy.deepcopy(job)
    if where != namespace:
        effective["metadata"][EXEC_NAMESPACE] = where
    return Resolved(effective, where, where)


def charged_budgets(job: Obj) -> list[str]:
    """Return the budget keys an admitted job's status says it charges."""
    entries = ((job.get("status") or {}).get("privacy") or {}).get("budgets") or []
    return [str(e["name"]) for e in entries if e.get("name")]
