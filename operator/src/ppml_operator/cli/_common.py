"""Helpers shared by the accounting commands: argument types, manifests, tables, JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any

from ppml_operator.privacy.decimals import parse_delta, parse_epsilon, to_decimal
from ppml_operator.privacy.errors import InvalidPrivacyParameterError


class UsageError(Exception):
    """A value on the command line or in a file that the command cannot use (exit code 2)."""


def _argument_type(parse: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except InvalidPrivacyParameterError as err:
            # argparse reports "argument --delta: <message>", naming the argument.
            raise argparse.ArgumentTypeError(str(err).rstrip(".")) from err

    convert.__name__ = what
    return convert


def _positive_decimal(text: str) -> Decimal:
    value = to_decimal(text, "value")
    if value <= 0:
        raise InvalidPrivacyParameterError(f"{text!r} must be greater than 0")
    return value


def _rate(text: str) -> Decimal:
    value = to_decimal(text, "value")
    if not 0 < value <= 1:
        raise InvalidPrivacyParameterError(f"{text!r} must be greater than 0 and at most 1")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise InvalidPrivacyParameterError(f"{text!r} is not a whole number") from err
    if value < 1:
        raise InvalidPrivacyParameterError(f"{text!r} must be at least 1")
    return value


epsilon_type = _argument_type(parse_epsilon, "epsilon")
delta_type = _argument_type(parse_delta, "delta")
positive_decimal_type = _argument_type(_positive_decimal, "decimal")
rate_type = _argument_type(_rate, "rate")
count_type = _argument_type(_count, "count")


def load_documents(paths: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(path, document)`` for every YAML document in ``paths`` (``-`` is stdin).

    Raises
    ------
    UsageError
        If a file cannot be read or parsed, or a document is not a mapping.

    """
    import yaml

    for path in paths:
        try:
            if path == "-":
                text = sys.stdin.read()
            else:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
        except OSError as err:
            raise UsageError(f"argument -f: cannot read {path}: {err.strerror}") from err
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError as err:
            raise UsageError(f"argument -f: {path} is not valid YAML ({err})") from err
        for document in documents:
            if document is None:
                continue
            if not isinstance(document, dict):
                raise UsageError(f"argument -f: {path} holds a document that is not a mapping")
            if document.get("kind") == "List" and isinstance(document.get("items"), list):
                for item in document["items"]:
                    if isinstance(item, dict):
                        yield path, item
                continue
            yield path, document


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render a kubectl-style table: left-aligned columns separated by three spaces."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines) + "\n"


def write_json(data: object) -> None:
    """Write ``data`` as indented JSON and a newline to stdout."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
