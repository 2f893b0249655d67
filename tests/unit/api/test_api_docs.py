"""docs/api-reference.md is generated from the models and carries every field and rule."""

from __future__ import annotations

from pathlib import Path

from ppml_operator.api import conditions, docgen

REPO = Path(__file__).resolve().parents[3]


def test_the_api_reference_has_not_drifted():
    path = REPO / "docs" / "api-reference.md"
    assert path.read_text() == docgen.render(), (
        "docs/api-reference.md drifted: run "
        "python -m ppml_operator.api.docgen > docs/api-reference.md"
    )


def test_the_reference_covers_kinds_fields_rules_and_conditions():
    text = docgen.render()
    for needle in (
        "## PrivacyBudget",
        "## PrivateTrainingJob",
        "## FederatedJob",
        "| `spec.privacy.targetEpsilon` |",
        "| `status.federation.roundsCompleted` |",
        "| `status.charges[].jobUID` |",
        "exactly one of targetEpsilon and noiseMultiplier",
        "spec.privacy is immutable",
    ):
        assert needle in text, needle
    for type_ in conditions.TYPES:
        assert f"| `{type_}` |" in text
    for reason in (
        conditions.BUDGET_EXHAUSTED,
        conditions.BUDGET_NOT_FOUND,
        conditions.INVALID_SPEC,
    ):
        assert f"| `{reason}` |" in text
