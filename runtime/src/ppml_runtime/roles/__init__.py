"""Roles of ``python -m ppml_runtime <role>``: one module per role, found by name.

A role is a module in this package that defines:

- ``HELP`` — one line for ``--help``;
- ``add_arguments(parser: argparse.ArgumentParser) -> None`` — its command-line options;
- ``run(args: argparse.Namespace) -> int`` — the work, returning the process exit code.

Adding a role is adding a module (``roles/superlink.py`` runs as
``python -m ppml_runtime superlink``); the module's name is the role's name, with ``_`` written
as ``-`` on the command line. Keep heavy imports (torch, opacus, flwr) inside ``run`` so that
``--help`` and the other roles stay fast.
"""
