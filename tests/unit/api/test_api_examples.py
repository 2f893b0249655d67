"""Every manifest under examples/ parses with the models, and every job in it can be paid for."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from ppml_operator.api.v1alpha1 import FederatedJob, PrivacyBudget, PrivateTrainingJob
from ppml_operator.reconcile.cost import job_charges

REPO = Path(__file__).resolve().parents[3]
FILES = sorted(p for p in (REPO / "examples").rglob("*.yaml") if p.is_file())
MODELS = {
    "PrivacyBudget": PrivacyBudget,
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
    } <= names


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(REPO).as_posix() for p in FILES])
def test_example_parses_and_fits_its_budgets(path):
    objects = ppml_objects(path)
    budgets = {}
    for obj in objects:
        assert obj["kind"] in MODELS, f"{path}: unknown kind {obj['kind']}"
        assert "namespace" not in obj.get("metadata", {}), (
            f"{path}: examples carry no namespace, so `kubectl apply -n ANY -f` works"
        )
        parsed = MODELS[obj["kind"]].model_validate(obj)
        if isinstance(parsed, PrivacyBudget):
            budgets[obj["metadata"]["name"]] = parsed
    for obj in objects:
        if obj["kind"] == "PrivacyBudget":
            continue
        for charge in job_charges(obj):
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
