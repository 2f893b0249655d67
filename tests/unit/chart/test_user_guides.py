"""The docs that ship with the chart: every API field has a user-guide entry; links resolve."""

from __future__ import annotations

import re

import pytest
import yaml

from .conftest import REPO

DOCS = REPO / "docs"
GUIDES = {
    "privacybudgets": DOCS / "user-guide" / "privacy-budget.md",
    "privatedatasets": DOCS / "user-guide" / "private-dataset.md",
    "privatetrainingjobs": DOCS / "user-guide" / "private-training-job.md",
    "federatedjobs": DOCS / "user-guide" / "federated-job.md",
}
# Sub-fields of these shared Kubernetes types are described once, by the type's own row.
SHARED = ("tolerations", "resources")


def spec_fields(plural: str) -> list[str]:
    crd = yaml.safe_load((REPO / "crds" / f"ppml.dev_{plural}.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    out: list[str] = []

    def walk(node: dict, path: str) -> None:
        props = node.get("properties") or (node.get("items") or {}).get("properties") or {}
        for key, sub in props.items():
            out.append(f"{path}.{key}")
            if key not in SHARED:
                walk(sub, f"{path}.{key}")

    walk(schema, "spec")
    return out


@pytest.mark.parametrize("plural", list(GUIDES))
def test_every_spec_field_is_in_the_user_guide(plural):
    text = GUIDES[plural].read_text()
    fields = spec_fields(plural)
    assert len(fields) >= 4
    missing = [f for f in fields if f"`{f}`" not in text]
    assert not missing, f"{GUIDES[plural].name} does not describe {missing}"


LINK = re.compile(r"\]\(([^)#\s]+\.md)(#[^)]*)?\)")


@pytest.mark.parametrize(
    "doc", sorted(p.relative_to(REPO).as_posix() for p in DOCS.rglob("*.md")), ids=str
)
def test_links_between_docs_resolve(doc):
    path = REPO / doc
    broken = [
        target
        for target, _ in LINK.findall(path.read_text())
        if not target.startswith("http") and not (path.parent / target).resolve().exists()
    ]
    assert not broken, f"{doc} links to missing {broken}"
