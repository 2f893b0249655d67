"""The ``submit`` role of a FederatedJob: see :mod:`ppml_runtime.federated.roles`."""

from __future__ import annotations

import argparse

from ppml_runtime.federated import roles as _federated

HELP = _federated.ROLES["submit"][0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the role's options."""
    _federated.ROLES["submit"][1](parser)


def run(args: argparse.Namespace) -> int:
    """Run the role and return its exit code."""
    return int(_federated.ROLES["submit"][2](args))
