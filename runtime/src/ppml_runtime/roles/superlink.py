"""The ``superlink`` role of a FederatedJob: see :mod:`ppml_runtime.federated.roles`."""

from __future__ import annotations

import argparse

from ppml_runtime.federated import roles as _federated

HELP = _federated.ROLES["superlink"][0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the role's options."""
    _federated.ROLES["superlink"][1](parser)


def run(args: argparse.Namespace) -> int:
    """Run the role and return its exit code."""
    return int(_federated.ROLES["superlink"][2](args))
