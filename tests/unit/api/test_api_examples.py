"""Every manifest under examples/ parses with the models, and every job in it can be paid for.

A job on a PrivateDataset (``spec.datasetRef``, the two-party example) is priced as the operator
prices it: resolved against the dataset declared beside it, in the same example directory.
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


def _declared_beside(path: Path, kind: str) -> dict[str, dict]:
    """Return the objects of ``kind`` in the example files of ``path``'s directory, by name."""
    return {
        obj["metadata"]["name"]: obj
        for sibling in sorted(path.parent.glob("*.yaml"))
        for obj in ppml_objects(sibling)
        if obj["kind"] == kind
    }


def _effective(path: Path, obj: dict) -> tuple[dict, Decimal | None]:
    """Return the job as the operator prices it, and its dataset's maxEpsilonPerJob if any."""
    ref = (obj.get("spec") or {}).get("datasetRef")
    if not ref:
        return obj, None
    found = _declared_beside(path, "PrivateDataset").get(ref["name"])
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


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(REPO).as_posix() for p in FILES])
def test_example_parses_and_fits_its_budgets(path):
    objects = ppml_objects(path)
    budgets = {
        name: PrivacyBudget.model_validate(obj)
        for name, obj in _declared_beside(path, "PrivacyBudget").items()
    }
    for obj in objects:
        assert obj["kind"] in MODELS, f"{path}: unknown kind {obj['kind']}"
        assert "namespace" not in obj.get("metadata", {}), (
            f"{path}: examples carry no namespace, so `kubectl apply -n ANY -f` works"
        )
        parsed = MODELS[obj["kind"]].model_validate(obj)
        if isinstance(parsed, PrivacyBudget):
            budgets[obj["metadata"]["name"]] = parsed
    for obj in objects:
        if obj["kind"] not in ("PrivateTrainingJob", "FederatedJob"):
            continue
        job, limit = _effective(path, obj)
        for charge in job_charges(job):
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
