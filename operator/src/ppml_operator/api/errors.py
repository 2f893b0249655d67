"""Domain exceptions of the API layer.

Handlers map these to kopf's permanent or temporary errors at the edge; everything below the
handlers raises and catches these. Messages are sentences that name the field and the value.
"""

from __future__ import annotations


class PpmlError(Exception):
    """Base of every domain error the operator raises."""


class InvalidSpecError(PpmlError):
    """A spec that the schema accepted but the operator cannot honour.

    Parameters
    ----------
    field
        The JSON path of the offending field, e.g. ``spec.privacy.delta``.
    message
        A sentence saying what is wrong and what to do, naming the value.

    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class BudgetNotFoundError(PpmlError):
    """The PrivacyBudget a job names does not exist (yet)."""

    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(f"PrivacyBudget {namespace}/{name} was not found")
        self.namespace = namespace
        self.name = name


class BudgetExhaustedError(PpmlError):
    """The budget cannot pay for the job now, but might once reservations are released."""

    def __init__(self, budget: str, message: str) -> None:
        super().__init__(message)
        self.budget = budget
        self.message = message


class BudgetNeverFitsError(PpmlError):
    """The job's cost exceeds the budget's total epsilon: it can never be admitted."""

    def __init__(self, budget: str, message: str) -> None:
        super().__init__(message)
        self.budget = budget
        self.message = message
