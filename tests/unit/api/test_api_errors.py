"""Domain errors carry the field and a sentence, and share one base."""

from __future__ import annotations

import pytest

from ppml_operator.api.errors import (
    BudgetExhaustedError,
    BudgetNeverFitsError,
    BudgetNotFoundError,
    InvalidSpecError,
    PpmlError,
)


def test_invalid_spec_names_the_field():
    err = InvalidSpecError("spec.privacy.delta", "delta 0.01 must be below 1/1797")
    assert (err.field, err.message) == ("spec.privacy.delta", "delta 0.01 must be below 1/1797")
    assert str(err) == "spec.privacy.delta: delta 0.01 must be below 1/1797"


@pytest.mark.parametrize(
    ("err", "text"),
    [
        pytest.param(
            BudgetNotFoundError("ml", "clinic"),
            "PrivacyBudget ml/clinic was not found",
            id="a missing budget",
        ),
        pytest.param(
            BudgetExhaustedError("clinic", "budget clinic has epsilon 0.4 left"),
            "budget clinic has epsilon 0.4 left",
            id="an exhausted budget",
        ),
        pytest.param(
            BudgetNeverFitsError("clinic", "this job needs 5, the budget holds 3"),
            "this job needs 5, the budget holds 3",
            id="a job that never fits",
        ),
    ],
)
def test_budget_errors(err, text):
    assert isinstance(err, PpmlError)
    assert str(err) == text
