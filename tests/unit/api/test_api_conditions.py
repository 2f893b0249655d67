"""Condition helpers: transitions, truncation and lookups, with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ppml_operator.api import conditions as c

T0 = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def cond(
    type_: str, status: str, reason: str, message: str = "", gen: int = 1, at: datetime = T0
) -> dict:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": gen,
        "lastTransitionTime": c.format_time(at),
    }


CASES = [
    pytest.param(
        [],
        dict(type=c.ADMITTED, status="False", reason=c.BUDGET_EXHAUSTED, message="wait"),
        1,
        True,
        [cond(c.ADMITTED, "False", c.BUDGET_EXHAUSTED, "wait", at=T1)],
        id="a new condition is appended with the clock as transition time",
    ),
    pytest.param(
        [cond(c.ADMITTED, "False", c.BUDGET_EXHAUSTED, "wait")],
        dict(type=c.ADMITTED, status="False", reason=c.BUDGET_EXHAUSTED, message="wait"),
        1,
        False,
        [cond(c.ADMITTED, "False", c.BUDGET_EXHAUSTED, "wait")],
        id="setting the same condition again changes nothing",
    ),
    pytest.param(
        [cond(c.ADMITTED, "False", c.BUDGET_NOT_FOUND, "no budget")],
        dict(type=c.ADMITTED, status="False", reason=c.BUDGET_EXHAUSTED, message="wait"),
        1,
        True,
        [cond(c.ADMITTED, "False", c.BUDGET_EXHAUSTED, "wait")],
        id="a new reason with the same status keeps the transition time",
    ),
    pytest.param(
        [cond(c.ADMITTED, "False", c.BUDGET_EXHAUSTED, "wait")],
        dict(type=c.ADMITTED, status=True, reason=c.RESERVED, message="paid"),
        1,
        True,
        [cond(c.ADMITTED, "True", c.RESERVED, "paid", at=T1)],
        id="a status flip moves the transition time (bools accepted)",
    ),
    pytest.param(
        [cond(c.ADMITTED, "True", c.RESERVED, "paid", gen=1)],
        dict(type=c.ADMITTED, status="True", reason=c.RESERVED, message="paid"),
        2,
        True,
        [cond(c.ADMITTED, "True", c.RESERVED, "paid", gen=2)],
        id="a new generation updates observedGeneration only",
    ),
    pytest.param(
        [cond(c.RUNNING, "True", c.PODS_RUNNING), cond(c.ADMITTED, "True", c.RESERVED)],
        dict(type=c.COMPLETE, status="True", reason=c.SUCCEEDED, message="done"),
        1,
        True,
        [
            cond(c.RUNNING, "True", c.PODS_RUNNING),
            cond(c.ADMITTED, "True", c.RESERVED),
            cond(c.COMPLETE, "True", c.SUCCEEDED, "done", at=T1),
        ],
        id="other conditions are left alone and keep their order",
    ),
]


@pytest.mark.parametrize(("before", "new", "generation", "changed", "after"), CASES)
def test_set_condition(before, new, generation, changed, after):
    conds = [dict(x) for x in before]
    assert c.set_condition(conds, new, now=T1, generation=generation) is changed
    assert conds == after


def test_long_messages_are_truncated_to_the_bound():
    conds: list[dict] = []
    c.set_condition(
        conds,
        dict(type=c.FAILED, status="True", reason=c.POD_FAILED, message="x" * 5000),
        now=T0,
        generation=1,
    )
    assert len(conds[0]["message"]) == c.MESSAGE_LIMIT
    assert conds[0]["message"].endswith("…")


def test_a_message_at_the_bound_is_kept_whole():
    assert c.truncate("y" * c.MESSAGE_LIMIT) == "y" * c.MESSAGE_LIMIT


def test_an_unknown_status_is_refused():
    with pytest.raises(ValueError, match="status must be one of"):
        c.set_condition(
            [], dict(type=c.FAILED, status="Maybe", reason=c.POD_FAILED), now=T0, generation=1
        )


def test_times_are_utc_with_seconds():
    plus_two = timezone(timedelta(hours=2))
    assert c.format_time(datetime(2026, 12, 1, 11, 0, 7, 999, tzinfo=plus_two)) == (
        "2026-12-01T09:00:07Z"
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        c.format_time(datetime(2026, 12, 1))


@pytest.mark.parametrize(
    ("conds", "type_", "found", "true"),
    [
        pytest.param(None, c.ADMITTED, None, False, id="no conditions at all"),
        pytest.param(
            [cond(c.ADMITTED, "True", c.RESERVED)],
            c.ADMITTED,
            c.RESERVED,
            True,
            id="a true condition",
        ),
        pytest.param(
            [cond(c.ADMITTED, "False", c.BUDGET_EXHAUSTED)],
            c.ADMITTED,
            c.BUDGET_EXHAUSTED,
            False,
            id="a false condition",
        ),
        pytest.param(
            [cond(c.ADMITTED, "Unknown", c.PENDING)],
            c.ADMITTED,
            c.PENDING,
            False,
            id="an unknown condition is not true",
        ),
        pytest.param(
            [cond(c.ADMITTED, "True", c.RESERVED)],
            c.COMPLETE,
            None,
            False,
            id="another type is absent",
        ),
    ],
)
def test_get_condition_and_is_true(conds, type_, found, true):
    got = c.get_condition(conds, type_)
    assert (got["reason"] if got else None) == found
    assert c.is_true(conds, type_) is true


def test_remove_condition():
    conds = [cond(c.SUSPENDED, "True", c.SUSPENDED_BY_USER), cond(c.ADMITTED, "True", c.RESERVED)]
    assert c.remove_condition(conds, c.SUSPENDED) is True
    assert [x["type"] for x in conds] == [c.ADMITTED]
    assert c.remove_condition(conds, c.SUSPENDED) is False


def test_every_constant_has_a_docstring_and_reasons_are_camel_case():
    import ast
    import inspect
    import re

    tree = ast.parse(inspect.getsource(c))
    body = tree.body
    for i, node in enumerate(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.value, ast.Constant)
            and (
                isinstance(node.value.value, str) and node.target.id.isupper()  # type: ignore[union-attr]
            )
        ):
            following = body[i + 1]
            assert isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant), (
                f"{node.target.id} has no docstring"  # type: ignore[union-attr]
            )
            assert re.fullmatch(r"[A-Z][A-Za-z]+", node.value.value)
