"""CRD generation: no drift from crds/, structural schemas, and the API's promises in the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
import yaml
from pydantic import BaseModel, Field

from ppml_operator.api import crdgen

REPO = Path(__file__).resolve().parents[3]
GENERATED = crdgen.generate()
CRDS = {info.kind: crdgen.crd(info) for info in crdgen.KINDS}


def schema_of(kind: str) -> dict:
    return CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def node_at(kind: str, path: str) -> dict:
    node = schema_of(kind)
    for part in path.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def walk(node: dict, path: str = ""):
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


ALL_NODES = [
    pytest.param(kind, path, node, id=f"{kind}{path}")
    for kind in CRDS
    for path, node in walk(schema_of(kind))
]


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_crds_have_not_drifted_from_the_models(name):
    path = REPO / "crds" / name
    assert path.exists(), f"{path} is missing: run python -m ppml_operator.api.crdgen --out crds/"
    assert path.read_text() == GENERATED[name], (
        f"{path} drifted from the models: run python -m ppml_operator.api.crdgen --out crds/"
    )


def test_check_mode_reports_drift_and_writes_nothing(tmp_path, capsys):
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 0
    victim = tmp_path / "ppml.dev_privacybudgets.yaml"
    victim.write_text(victim.read_text().replace("pbudget", "pb"))
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 1
    assert "drifted" in capsys.readouterr().out
    assert "- pb\n" in victim.read_text()


@pytest.mark.parametrize(("kind", "path", "node"), ALL_NODES)
def test_every_node_is_structural(kind, path, node):
    assert "$ref" not in node and "allOf" not in node and "oneOf" not in node
    assert "title" not in node
    if "anyOf" in node:
        assert node.get("x-kubernetes-int-or-string") is True
    else:
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
    if "properties" in node:
        assert node["type"] == "object" and "additionalProperties" not in node
    assert node.get("additionalProperties") is not False


@pytest.mark.parametrize(("kind", "path", "node"), ALL_NODES)
def test_every_field_has_kubectl_explain_text_naming_it(kind, path, node):
    if path in ("", ".metadata"):
        return
    description = node.get("description", "")
    if path.endswith(("[]", "}")):
        return
    field = path.rsplit(".", 1)[-1]
    assert description, f"{kind}{path} has no description"
    assert description.split()[0].strip(",.:") == field, (
        f"{kind}{path}: a description starts with the field name, got {description[:40]!r}"
    )


@pytest.mark.parametrize(("kind", "path", "node"), [p for p in ALL_NODES if ".spec" in p.values[1]])
def test_spec_strings_and_lists_are_bounded_for_cel_cost(kind, path, node):
    if node.get("type") == "string":
        assert "maxLength" in node or "enum" in node, f"{kind}{path} is an unbounded string"
    if node.get("type") == "array":
        assert "maxItems" in node, f"{kind}{path} is an unbounded list"
    if node.get("type") == "object" and "additionalProperties" in node:
        assert "maxProperties" in node, f"{kind}{path} is an unbounded map"


@pytest.mark.parametrize(
    ("kind", "path", "keys"),
    [
        ("PrivacyBudget", "status.conditions", ["type"]),
        ("PrivacyBudget", "status.charges", ["jobUID"]),
        ("PrivateTrainingJob", "status.conditions", ["type"]),
        ("FederatedJob", "status.conditions", ["type"]),
        ("FederatedJob", "spec.clients", ["name"]),
    ],
)
def test_list_maps(kind, path, keys):
    node = node_at(kind, path)
    assert node["x-kubernetes-list-type"] == "map"
    assert node["x-kubernetes-list-map-keys"] == keys
    for key in keys:
        assert key in node["items"]["required"]


IMMUTABLE = [
    ("PrivacyBudget", "spec.delta"),
    ("PrivacyBudget", "spec.composition"),
    *[
        ("PrivateTrainingJob", f"spec.{f}")
        for f in ("budgetRef", "privacy", "data", "model", "training", "runtime", "checkpoint")
    ],
    *[
        ("FederatedJob", f"spec.{f}")
        for f in (
            "budgetRef",
            "rounds",
            "strategy",
            "clients",
            "minClients",
            "clientsPerRound",
            "privacy",
            "secureAggregation",
            "tls",
            "authentication",
            "model",
            "training",
            "runtime",
        )
    ],
]


@pytest.mark.parametrize(("kind", "path"), IMMUTABLE)
def test_privacy_relevant_fields_are_immutable(kind, path):
    rules = node_at(kind, path).get("x-kubernetes-validations", [])
    assert any(r["rule"] == "self == oldSelf" and path in r["message"] for r in rules)


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("PrivacyBudget", "spec.epsilon"),
        ("PrivacyBudget", "spec.description"),
        ("PrivateTrainingJob", "spec.suspend"),
        ("PrivateTrainingJob", "spec.activeDeadlineSeconds"),
        ("PrivateTrainingJob", "spec.ttlSecondsAfterFinished"),
        ("FederatedJob", "spec.suspend"),
    ],
)
def test_operational_fields_stay_mutable(kind, path):
    rules = node_at(kind, path).get("x-kubernetes-validations", [])
    assert not any("oldSelf" in r["rule"] for r in rules)


def test_exactly_one_of_target_epsilon_and_noise_multiplier_is_a_cel_rule():
    rules = node_at("PrivateTrainingJob", "spec.privacy")["x-kubernetes-validations"]
    assert {
        "rule": "has(self.targetEpsilon) != has(self.noiseMultiplier)",
        "message": "exactly one of targetEpsilon and noiseMultiplier must be set",
    } in rules


def test_a_training_job_names_exactly_one_of_data_and_dataset_and_pays_by_it():
    spec = node_at("PrivateTrainingJob", "spec")
    assert "budgetRef" not in spec["required"] and "data" not in spec["required"]
    rules = {r["rule"] for r in spec["x-kubernetes-validations"]}
    assert "has(self.datasetRef) != has(self.data)" in rules
    assert "has(self.datasetRef) != has(self.budgetRef)" in rules
    assert "!has(self.datasetRef) || !has(self.checkpoint)" in rules
    assert "budgetRef" not in node_at("FederatedJob", "spec").get("required", [])


@pytest.mark.parametrize(
    ("kind", "plural", "short", "columns"),
    [
        (
            "PrivacyBudget",
            "privacybudgets",
            ["pbudget"],
            [
                "Epsilon",
                "Delta",
                "Spent",
                "Reserved",
                "Remaining",
                "Composition",
                "Exhausted",
                "Age",
            ],
        ),
        (
            "PrivateTrainingJob",
            "privatetrainingjobs",
            ["ptj"],
            [
                "Dataset",
                "Budget",
                "Epsilon",
                "Admitted",
                "Running",
                "Complete",
                "Failed",
                "Step",
                "Steps",
                "Accuracy",
                "Model",
                "Age",
            ],
        ),
        (
            "FederatedJob",
            "federatedjobs",
            ["fedjob"],
            [
                "Budget",
                "Privacy",
                "Rounds",
                "Done",
                "Epsilon",
                "Admitted",
                "Complete",
                "Failed",
                "Age",
            ],
        ),
    ],
)
def test_names_columns_and_subresources(kind, plural, short, columns):
    crd = CRDS[kind]
    assert crd["metadata"]["name"] == f"{plural}.ppml.dev"
    names = crd["spec"]["names"]
    assert names["plural"] == plural and names["shortNames"] == short
    assert names["categories"] == ["ppml"]
    assert crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == columns


def test_printer_columns_point_at_fields_that_exist():
    for kind, crd in CRDS.items():
        for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
            path = column["jsonPath"]
            if path.startswith(".metadata"):
                continue
            dotted = path.lstrip(".").split("[", 1)[0]
            node_at(kind, dotted)  # raises KeyError when the column names no field


def test_defaults_of_objects_are_complete_so_cel_rules_hold_on_them():
    privacy = node_at("FederatedJob", "spec.privacy")
    assert privacy["default"]["mode"] == "None"
    assert node_at("FederatedJob", "spec.tls")["default"] == {"enabled": True}
    assert node_at("PrivateTrainingJob", "spec.runtime")["default"] == {"workers": 1}


def test_resource_quantities_are_int_or_string():
    limits = node_at("PrivateTrainingJob", "spec.runtime.resources.limits")
    quantity = limits["additionalProperties"]
    assert quantity["x-kubernetes-int-or-string"] is True
    assert quantity["anyOf"] == [{"type": "integer"}, {"type": "string"}]


def test_the_files_are_plain_yaml_without_aliases():
    for text in GENERATED.values():
        assert "&id" not in text and "*id" not in text
        assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"


def test_a_union_of_types_is_refused_by_the_generator():
    class Bad(BaseModel):
        value: int | str = Field(description="value is either")

    raw = Bad.model_json_schema()
    with pytest.raises(crdgen.SchemaConversionError, match="union"):
        crdgen.structural(raw, raw.get("$defs", {}), "Bad")


def test_an_unknown_keyword_is_refused_by_the_generator():
    class Odd(BaseModel):
        tags: Annotated[set[str], Field(description="tags are unique")]

    raw = Odd.model_json_schema()
    with pytest.raises(crdgen.SchemaConversionError, match="uniqueItems"):
        crdgen.structural(raw, raw.get("$defs", {}), "Odd")


def test_decimals_take_a_whole_number_or_a_string_and_keep_their_rules():
    """Issue 13: `epsilon: 3` must pass the API server; fractions stay strings (exact)."""
    from ppml_operator.api.crdgen import KINDS, openapi_schema
    from ppml_operator.api.v1alpha1.common import DECIMAL_PATTERN

    budget = openapi_schema(KINDS[0].model)["properties"]["spec"]["properties"]
    for name in ("epsilon", "delta"):
        node = budget[name]
        assert node["x-kubernetes-int-or-string"] is True and "type" not in node
        assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}]
        assert node["pattern"] == DECIMAL_PATTERN and node["minimum"] == 0
        assert node["x-kubernetes-validations"][0]["rule"].startswith("double(self) > 0.0")
