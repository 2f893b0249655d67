"""Every manifest under examples/ parses with the models, and every job in it can be paid for.

An example carries no namespace (``kubectl apply -n ANY -f FILE`` works), except one party's
file of a multi-party directory (``examples/federated/across-clinics/``, applied whole with
``kubectl apply -f DIR/``): it declares its party's Namespace and every other object in it names
that namespace, and no other.

A job on PrivateDatasets (``spec.datasetRef``, the two-party example; ``clients[].datasetRef``,
the federation across clinics) is priced as the operator prices it: resolved against the
datasets declared in the same example directory, each charge checked against the budget it
names and the dataset's per-job limit.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from ppml_operator.api.v1alpha1 import (
    FederatedJob,
    PrivacyBudget,
    PrivateDataset,
    PrivateTrainingJob,
)
from ppml_operator.reconcile import dataset
from ppml_operator.reconcile.cost import job_charges
from ppml_operator.render.common import budget_key

REPO = Path(__file__).resolve().parents[3]
FILES = sorted(p for p in (REPO / "examples").rglob("*.yaml") if p.is_file())
MODELS = {
    "PrivacyBudget": PrivacyBudget,
    "PrivateDataset": PrivateDataset,
    "PrivateTrainingJob": PrivateTrainingJob,
    "FederatedJob": FederatedJob,
}


def ppml_objects(path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return [d for d in docs if str(d.get("apiVersion", "")).startswith("ppml.dev/")]


def test_the_api_examples_exist():
    names = {p.relative_to(REPO / "examples").as_posix() for p in FILES}
    assert {
        "private-training/digits-dp-sgd.yaml",
        "private-training/mnist-cnn.yaml",
        "private-training/digits-gpu.yaml",
        "budgets/clinic-records.yaml",
        "two-party/data-owner.yaml",
        "two-party/analyst.yaml",
    } <= names


def all_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def party_namespace(path: Path) -> str | None:
    """Return the namespace a multi-party example file is for, None for a namespace-free one.

    A file whose objects name a namespace must declare exactly that Namespace and name it on
    every other object (so ``kubectl apply -f DIR/`` creates the party and what it holds).
    """
    docs = all_docs(path)
    if not ppml_objects(path):
        return None  # not an API example (e.g. examples/gitops): kubectl's rules only
    named = {d["metadata"]["namespace"] for d in docs if "namespace" in d.get("metadata", {})}
    if not named:
        return None
    declared = [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"]
    assert len(named) == 1 and declared == sorted(named), (
        f"{path}: a file that names a namespace declares that one Namespace and names no other "
        f"(names {sorted(named)}, declares {declared})")
    [ns] = named
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == ns, (
                f"{path}: {doc['kind']} {doc['metadata']['name']} does not name namespace {ns} "
                f"(the party this file declares): it would land in kubectl's current one")
    return ns


def _declared_beside(path: Path, kind: str) -> dict[tuple[str | None, str], dict]:
    """Return the objects of ``kind`` in ``path``'s directory, by (party namespace, name)."""
    return {
        (party_namespace(sibling), obj["metadata"]["name"]): obj
        for sibling in sorted(path.parent.glob("*.yaml"))
        for obj in ppml_objects(sibling)
        if obj["kind"] == kind
    }


def _effective_federation(path: Path, obj: dict) -> tuple[dict, dict[str, Decimal]]:
    """Return a federation on PrivateDatasets as the operator prices it, and each budget's limit.

    Its file and its datasets' are parties' files of a multi-party directory: every namespace
    is as written.
    """
    job = {**obj, "metadata": {**obj["metadata"], "uid": "u"}}
    assert "namespace" in obj["metadata"], f"{path}: a federation on datasets names its party"
    declared = _declared_beside(path, "PrivateDataset")
    refs = dataset.client_dataset_refs(job)
    for ref in refs:
        assert ref in declared, f"{path}: no PrivateDataset {ref} in the example directory"
    datasets = {
        ref: {**declared[ref], "metadata": {**declared[ref]["metadata"], "namespace": ref[0]}}
        for ref in refs}
    resolved = dataset.resolve_federation(job, datasets, operator_namespace="ppml-system")
    assert isinstance(resolved, dataset.Resolved), f"{path}: {resolved}"
    limits = {}
    for (ns, _), ds in datasets.items():
        limit = (ds["spec"].get("access") or {}).get("maxEpsilonPerJob")
        if limit is not None:
            budget = budget_key(ns, ds["spec"]["budgetRef"]["name"], job["metadata"]["namespace"])
            limits[budget] = Decimal(str(limit))
    return resolved.job, limits


def _effective(path: Path, obj: dict) -> tuple[dict, Decimal | None]:
    """Return the job as the operator prices it, and its dataset's maxEpsilonPerJob if any."""
    ref = (obj.get("spec") or {}).get("datasetRef")
    if not ref:
        return obj, None
    found = _declared_beside(path, "PrivateDataset").get((None, ref["name"]))
    assert found is not None, f"{path}: no PrivateDataset {ref['name']} beside the job"
    # Examples carry no namespace: put the job where the dataset's grant expects it.
    granted = (found["spec"].get("access") or {}).get("namespaces") or []
    ds_ns = ref.get("namespace") or "owner"
    job_ns = granted[0] if ref.get("namespace") and granted else ds_ns
    ds = {**found, "metadata": {**found["metadata"], "namespace": ds_ns}}
    job = {**obj, "metadata": {**obj["metadata"], "namespace": job_ns, "uid": "u"}}
    resolved = dataset.resolve(job, ds, {})
    assert isinstance(resolved, dataset.Resolved), f"{path}: {resolved}"
    limit = ds["spec"].get("access", {}).get("maxEpsilonPerJob")
    return resolved.job, None if limit is None else Decimal(str(limit))


def _budgets(path: Path, job_namespace: str | None) -> dict[str, PrivacyBudget]:
    """Return the directory's budgets by the key a charge names them with (``budget_key``)."""
    out = {}
    for (ns, name), obj in _declared_beside(path, "PrivacyBudget").items():
        if (ns is None) != (job_namespace is None):
            continue  # a namespace-free file and a party's file never meet
        key = name if ns is None else budget_key(ns, name, str(job_namespace))
        out[key] = PrivacyBudget.model_validate(obj)
    return out


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(REPO).as_posix() for p in FILES])
def test_example_parses_and_fits_its_budgets(path):
    objects = ppml_objects(path)
    party = party_namespace(path)
    for obj in objects:
        assert obj["kind"] in MODELS, f"{path}: unknown kind {obj['kind']}"
        if party is None:
            assert "namespace" not in obj.get("metadata", {}), (
                f"{path}: examples carry no namespace, so `kubectl apply -n ANY -f` works"
            )
        MODELS[obj["kind"]].model_validate(obj)
    for obj in objects:
        if obj["kind"] not in ("PrivateTrainingJob", "FederatedJob"):
            continue
        limits: dict[str, Decimal] = {}
        if dataset.client_dataset_refs({**obj, "metadata": {
                "namespace": "x", **obj["metadata"]}}):
            job, limits = _effective_federation(path, obj)
            limit = None
        else:
            job, limit = _effective(path, obj)
        budgets = _budgets(path, party)
        for charge in job_charges(job):
            limit = limits.get(charge.budget, limit)
            if party is not None:
                assert charge.budget in budgets, (
                    f"{path}: {obj['metadata']['name']} charges budget {charge.budget}, which "
                    f"no file of the directory declares")
            if limit is not None:
                assert charge.epsilon <= limit, (
                    f"{path}: {obj['metadata']['name']} costs {charge.epsilon}, more than its "
                    f"dataset lets one job take ({limit})"
                )
            if charge.budget in budgets:
                spec = budgets[charge.budget].spec
                assert charge.epsilon <= Decimal(spec.epsilon), (
                    f"{path}: {obj['metadata']['name']} costs {charge.epsilon}, more than "
                    f"budget {charge.budget} holds ({spec.epsilon})"
                )


BUDGET = ("apiVersion: ppml.dev/v1alpha1\nkind: PrivacyBudget\nmetadata:\n  name: b\n{ns}"
          "spec:\n  epsilon: 1\n")
NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n---\n"


@pytest.mark.parametrize(("text", "party"), [
    pytest.param(BUDGET.format(ns=""), None, id="no namespace anywhere"),
    pytest.param(NAMESPACE.format(name="a") + BUDGET.format(ns="  namespace: a\n"), "a",
                 id="a party's file names the namespace it declares"),
    pytest.param(NAMESPACE.format(name="a") + BUDGET.format(ns="  namespace: b\n"), "refused",
                 id="an object names another party's namespace"),
    pytest.param(BUDGET.format(ns="  namespace: a\n"), "refused",
                 id="a namespace the file does not declare"),
    pytest.param(NAMESPACE.format(name="a") + BUDGET.format(ns="  namespace: a\n") + "---\n"
                 + BUDGET.format(ns=""), "refused",
                 id="one object of a party's file without its namespace"),
])
def test_a_party_file_names_exactly_its_own_namespace(tmp_path, text, party):
    path = tmp_path / "example.yaml"
    path.write_text(text)
    if party == "refused":
        with pytest.raises(AssertionError):
            party_namespace(path)
    else:
        assert party_namespace(path) == party


DECIMAL_KEYS = {
    "epsilon",
    "delta",
    "targetEpsilon",
    "noiseMultiplier",
    "maxGradNorm",
    "learningRate",
    "testFraction",
    "clippingNorm",
}


def test_decimal_values_in_examples_are_whole_numbers_or_quoted():
    """Unquoted, kubectl reads 1e-5 or 0.5 as a float and the API server refuses it; 3 is fine.

    PyYAML reads an unquoted 1e-5 as a string (YAML 1.1 wants a dot in a float), so the text
    is checked too: kubectl's parser reads it as a number.
    """
    unquoted = re.compile(
        rf"^\s*({'|'.join(DECIMAL_KEYS)}):\s*[0-9.]*[.eE][0-9.eE+-]*\s*(#.*)?$", re.M
    )
    for path in FILES:
        assert not unquoted.findall(path.read_text()), f"{path}: quote decimal fractions"
        for obj in ppml_objects(path):
            MODELS[obj["kind"]].model_validate(obj, strict=False)
            for key, value in _walk(obj.get("spec", {})):
                if key in DECIMAL_KEYS:
                    assert isinstance(value, str | int) and not isinstance(value, bool), (
                        f"{path}: {key} must be a whole number or a quoted string"
                    )


def _walk(node, key=None):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)
    else:
        yield key, node
