"""Evaluate the CRDs' CEL rules in Python, from the very text the API server checks.

A rule that CEL can express is written once, as CEL, beside its model (``x-kubernetes-
validations`` in the generated CRD); the model's validator reads the same rules and evaluates
them here with ``cel-python``, so ``ppml cost``, the operator and the API server can never
disagree about them. Transition rules (those naming ``oldSelf``) are the API server's alone: a
model validates one object, not an update.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import celpy
from celpy.adapter import json_to_cel

from .common import cel, cel_rules

Rule = tuple[str, str, str | None]
"""``(expression, message, fieldPath or None)``, as :func:`common.cel` renders it."""


@functools.cache
def _program(expression: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expression))


def is_transition_rule(expression: str) -> bool:
    """Return whether a rule compares with the stored object (``oldSelf``)."""
    return "oldSelf" in expression


def failures(rules: Iterable[Rule], obj: dict[str, Any]) -> list[Rule]:
    """Return the rules ``obj`` (the wire form of the node they sit on) does not satisfy.

    A rule whose evaluation errs fails, as on the API server.
    """
    activation = {"self": json_to_cel(obj)}
    failed: list[Rule] = []
    for rule in rules:
        if is_transition_rule(rule[0]):
            continue
        try:
            ok = _program(rule[0]).evaluate(activation)
        except Exception:  # celpy raises its own evaluation errors
            ok = False
        if ok is not True and not (isinstance(ok, celpy.celtypes.BoolType) and bool(ok)):
            failed.append(rule)
    return failed


def entries(rules: Iterable[Rule]) -> list[dict[str, Any]]:
    """Return ``rules`` as ``x-kubernetes-validations`` entries (:func:`common.cel`)."""
    return [cel(expression, message, field_path=path) for expression, message, path in rules]


def schema_extra(rules: Iterable[Rule]) -> dict[str, Any]:
    """Return a model's ``json_schema_extra`` carrying ``rules`` (:func:`common.cel_rules`)."""
    return cel_rules(*entries(rules))


def check(model: Any, rules: Iterable[Rule]) -> None:
    """Raise ``ValueError`` with the first rule a model's wire form does not satisfy."""
    failed = failures(rules, model.model_dump(mode="json", by_alias=True, exclude_none=True))
    if failed:
        raise ValueError(failed[0][1])

