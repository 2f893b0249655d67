"""ppml: what privacy jobs cost, what-if budget plans, and views of budgets and jobs.

Each subcommand lives in its own module that provides ``add_arguments(parser)`` (which sets
``func`` with ``parser.set_defaults(func=run)``) and ``run(args) -> int``. A module is imported
only when its command is run, so ``ppml --help`` stays cheap; to add a command, add a line to
:data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

USAGE_ERROR = 2
"""Exit code of a command line that could not be understood or a value that is invalid."""


@dataclass(frozen=True)
class Command:
    """One ``ppml`` subcommand.

    Attributes
    ----------
    path
        The words that name it, e.g. ``("budget", "plan")``.
    module
        The module providing ``add_arguments`` and ``run``.
    help
        The one-line help shown by ``ppml --help``.

    """

    path: tuple[str, ...]
    module: str
    help: str


COMMANDS: tuple[Command, ...] = (
    Command(("cost",), "ppml_operator.cli.cost", "compute what a job costs, or calibrate noise"),
    Command(
        ("budget", "plan"),
        "ppml_operator.cli.plan",
        "which jobs fit in a budget, in order (a what-if)",
    ),
    Command(
        ("budget", "history"),
        "ppml_operator.cli.history",
        "epsilon a budget spent over time, job by job",
    ),
    Command(("status",), "ppml_operator.cli.status", "budgets and jobs at a glance"),
)
"""Every subcommand; the order is the order of ``ppml --help``."""

GROUPS: dict[str, str] = {"budget": "plan and inspect privacy budgets"}
"""One-line help of the words that group several commands."""


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, ``ppml: error: ...``, and exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one sentence naming the argument and exit with code 2."""
        text = message[0].upper() + message[1:] if message else message
        if not text.endswith("."):
            text += "."
        self.exit(USAGE_ERROR, f"{self.prog}: error: {text}\n")


def fail(prog: str, message: str) -> int:
    """Print ``message`` as ``PROG: error: MESSAGE`` on stderr; return :data:`USAGE_ERROR`."""
    text = message[0].upper() + message[1:] if message else message
    if not text.endswith("."):
        text += "."
    sys.stderr.write(f"{prog}: error: {text}\n")
    return USAGE_ERROR


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """Build the parser; only the command named by ``argv`` gets its arguments (and import)."""
    parser = ArgumentParser(prog="ppml", description=__doc__.splitlines()[0])
    from ppml_operator import __version__

    parser.add_argument("--version", action="version", version=f"ppml {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=ArgumentParser
    )
    groups: dict[str, argparse._SubParsersAction[ArgumentParser]] = {}
    words = [word for word in argv if not word.startswith("-")]
    for command in COMMANDS:
        prog = "ppml " + " ".join(command.path)
        if len(command.path) == 1:
            sub = subparsers.add_parser(
                command.path[0], help=command.help, description=command.help
            )
        else:
            group, name = command.path
            if group not in groups:
                group_parser = subparsers.add_parser(
                    group, help=GROUPS.get(group, ""), description=GROUPS.get(group)
                )
                group_parser.prog = f"ppml {group}"
                group_parser.set_defaults(print_usage=group_parser.print_help)
                groups[group] = group_parser.add_subparsers(
                    dest="subcommand", metavar="COMMAND", parser_class=ArgumentParser
                )
            sub = groups[group].add_parser(name, help=command.help, description=command.help)
        sub.prog = prog
        if words[: len(command.path)] == list(command.path):
            module = importlib.import_module(command.module)
            module.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ppml``; return the exit code (the console script ``ppml`` calls this).

    Parameters
    ----------
    argv
        The arguments after ``ppml``; ``sys.argv[1:]`` when not given.

    Returns
    -------
    int
        0 on success, 2 for a bad command line or an invalid value, 1 for other failures.

    """
    argv = list(sys.argv[1:] if argv is None else argv)
    # dp_accounting logs through absl when a series fails to converge (the order is then
    # excluded, which is safe); those warnings would only confuse a command-line user.
    logging.getLogger("absl").setLevel(logging.ERROR)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # "ppml" or "ppml budget" alone: show what can follow, as git does.
        getattr(args, "print_usage", parser.print_help)()
        return USAGE_ERROR
    return int(func(args))
