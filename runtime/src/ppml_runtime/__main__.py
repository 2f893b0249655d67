"""``python -m ppml_runtime <role> [options]``: dispatch to a role module.

Roles are the modules of :mod:`ppml_runtime.roles` (see its docstring for how to add one).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from ppml_runtime import __version__, roles


def discover_roles() -> dict[str, ModuleType]:
    """Import every role module and return them by command-line name."""
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(roles.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{roles.__name__}.{info.name}")
        if callable(getattr(module, "run", None)):
            found[info.name.replace("_", "-")] = module
    return found


def build_parser(found: dict[str, ModuleType]) -> argparse.ArgumentParser:
    """Build the command-line parser with one sub-command per role."""
    parser = argparse.ArgumentParser(
        prog="python -m ppml_runtime", description="ppml-operator runtime: what runs in the pods"
    )
    parser.add_argument("--version", action="version", version=f"ppml_runtime {__version__}")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="role", metavar="ROLE", required=True)
    for name, module in found.items():
        role_parser = sub.add_parser(name, help=getattr(module, "HELP", ""))
        add_arguments = getattr(module, "add_arguments", None)
        if callable(add_arguments):
            add_arguments(role_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the chosen role, return its exit code."""
    found = discover_roles()
    args = build_parser(found).parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return int(found[args.role].run(args))


if __name__ == "__main__":
    sys.exit(main())
