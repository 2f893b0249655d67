"""``ppml budget plan``: which jobs would fit in a budget, in order, and what each leaves.

A what-if for data owners::

    ppml budget plan -f BUDGET.yaml -f JOBS.yaml [--json]

The files hold one PrivacyBudget (or name one with ``--budget``) and the jobs, in the order they
would be submitted. Each job's charge on that budget is computed exactly as the operator will
reserve it; jobs are admitted greedily in order under the budget's composition: a job that does
not fit is skipped (it would wait) and later jobs are still tried. Charges already Reserved or
Committed in the budget's ``status.charges``, and the committed charges folded into
``status.folded`` (as ``kubectl get -o yaml`` shows them), count as spent before the first job.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ppml_operator.cli import fail
from ppml_operator.cli._common import UsageError, load_documents, table, write_json

PROG = "ppml budget plan"
_LIVE_STATES = ("Reserved", "Committed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``ppml budget plan``'s options to ``parser``."""
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE.yaml",
        help="a file with the budget and/or jobs (repeatable; - reads stdin)",
    )
    parser.add_argument("--budget", metavar="NAME", help="the budget to plan (when several)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``ppml budget plan``; return the exit code."""
    try:
        result = plan(args.filename, args.budget)
    except UsageError as err:
        return fail(PROG, str(err))
    if args.json:
        write_json(result)
        return 0
    budget = result["budget"]
    sys.stdout.write(
        f"PrivacyBudget {budget['name']}: epsilon {budget['epsilon']} at delta {budget['delta']}, "
        f"composition {budget['composition']}, {budget['spentBefore']} spent before the plan\n"
    )
    rows = [
        [
            job["kind"],
            job["name"],
            job["epsilon"],
            "yes" if job["fits"] else "no",
            job["spentAfter"],
            job["remainingAfter"],
            job["reason"],
        ]
        for job in result["jobs"]
    ]
    sys.stdout.write(
        table(
            ["KIND", "NAME", "EPSILON", "FITS", "SPENT AFTER", "REMAINING AFTER", "WHY NOT"], rows
        )
    )
    sys.stdout.write(
        f"{result['fitCount']} of {len(result['jobs'])} jobs fit; epsilon "
        f"{result['remainingEpsilon']} remains.\n"
    )
    return 0


def _budget(
    documents: list[tuple[str, dict[str, Any]]], name: str | None
) -> tuple[str, Any, dict[str, Any]]:
    from pydantic import ValidationError

    from ppml_operator.api.v1alpha1 import PrivacyBudget

    budgets = [(p, d) for p, d in documents if d.get("kind") == "PrivacyBudget"]
    if name is not None:
        budgets = [(p, d) for p, d in budgets if (d.get("metadata") or {}).get("name") == name]
    if len(budgets) != 1:
        which = f"PrivacyBudget {name}" if name else "exactly one PrivacyBudget"
        found = f"found {len(budgets)}"
        raise UsageError(f"argument {'--budget' if name else '-f'}: expected {which}, {found}")
    path, document = budgets[0]
    body = {k: v for k, v in document.items() if k != "status"}
    try:
        model = PrivacyBudget.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UsageError(
            f"argument -f: PrivacyBudget in {path} is invalid at {where}: {first['msg']}"
        ) from err
    return path, model, document


def plan(paths: list[str], budget_name: str | None = None) -> dict[str, Any]:
    """Plan the jobs in ``paths`` against the budget in ``paths``.

    Returns
    -------
    dict
        ``{"budget": {...}, "jobs": [{"kind", "name", "epsilon", "delta", "fits",
        "spentAfter", "remainingAfter", "deltaAfter", "epsilonIfAdmitted", "reason"}],
        "fitCount", "spentEpsilon",
        "remainingEpsilon"}``, every number a decimal string.

    Raises
    ------
    UsageError
        If the files hold no (or several) budgets, no job, or an invalid object.

    """
    from ppml_operator.cli.cost import charges_of
    from ppml_operator.privacy import (
        InvalidPrivacyEventError,
        InvalidPrivacyParameterError,
        LedgerAccount,
        event_from_dict,
        format_cost,
        format_remaining,
        parse_delta,
        parse_epsilon,
    )
    from ppml_operator.privacy.decimals import format_decimal, remaining

    documents = list(load_documents(paths))
    path, model, document = _budget(documents, budget_name)
    name = str((document.get("metadata") or {}).get("name", ""))
    if not name:
        raise UsageError(f"argument -f: the PrivacyBudget in {path} has no metadata.name")
    epsilon = parse_epsilon(model.spec.epsilon)
    delta = parse_delta(model.spec.delta)
    composition = str(getattr(model.spec.composition, "value", model.spec.composition))
    ledger = LedgerAccount(composition, delta)
    for index, charge in enumerate((document.get("status") or {}).get("charges") or []):
        if charge.get("state") not in _LIVE_STATES:
            continue
        try:
            events = [event_from_dict(e) for e in charge.get("events") or []]
        except InvalidPrivacyEventError as err:
            raise UsageError(
                f"argument -f: PrivacyBudget {name} in {path}: status.charges[{index}]: {err}"
            ) from err
        charge_delta = charge.get("delta")
        ledger.add(events, key=f"status-{index}", delta=charge_delta or None)
    folded = (document.get("status") or {}).get("folded") or {}
    if folded.get("count"):
        try:
            if ledger.composition.value == "Basic":
                ledger.add_basic(
                    folded.get("basicEpsilon") or "0",
                    folded.get("basicDelta") or delta * int(folded["count"]),
                    key="folded",
                )
            else:
                events = [event_from_dict(e) for e in folded.get("events") or []]
                ledger.add(events, key="folded")
        except (InvalidPrivacyEventError, InvalidPrivacyParameterError) as err:
            raise UsageError(
                f"argument -f: PrivacyBudget {name} in {path}: status.folded: {err}"
            ) from err
    spent_before = ledger.spent_epsilon()
    jobs: list[dict[str, Any]] = []
    fit_count = 0
    for charge in charges_of(paths):
        if charge.budget != name:
            continue
        fit = ledger.would_fit(list(charge.events), epsilon, delta=charge.delta)
        if fit.fits:
            reason = ""
        elif fit.epsilon_after > epsilon:
            reason = (
                f"epsilon would reach {format_cost(fit.epsilon_after)}, "
                f"above {format_decimal(epsilon)}"
            )
        else:
            reason = (
                f"delta would reach {format_cost(fit.delta_after)}, above {format_decimal(delta)}"
            )
        if fit.fits:
            ledger.add(list(charge.events), key=f"{charge.kind}/{charge.name}", delta=charge.delta)
            fit_count += 1
        spent = ledger.spent_epsilon()
        jobs.append(
            {
                "kind": charge.kind,
                "name": charge.name,
                "epsilon": format_cost(charge.epsilon),
                "delta": format_decimal(charge.delta),
                "fits": fit.fits,
                "spentAfter": format_cost(spent),
                "remainingAfter": format_remaining(remaining(epsilon, spent)),
                "deltaAfter": format_cost(ledger.spent_delta()),
                "epsilonIfAdmitted": format_cost(fit.epsilon_after),
                "reason": reason,
            }
        )
    spent = ledger.spent_epsilon()
    return {
        "budget": {
            "name": name,
            "epsilon": format_decimal(epsilon),
            "delta": format_decimal(delta),
            "composition": composition,
            "spentBefore": format_cost(spent_before),
        },
        "jobs": jobs,
        "fitCount": fit_count,
        "spentEpsilon": format_cost(spent),
        "remainingEpsilon": format_remaining(remaining(epsilon, spent)),
    }
