"""``ppml cost``: the epsilon a DP-SGD job spends, the noise a target needs, or what jobs charge.

Three forms::

    ppml cost --noise-multiplier Z --sample-rate Q --steps T --delta D [--accountant rdp|pld]
    ppml cost --target-epsilon E --sample-rate Q --steps T --delta D [--accountant rdp|pld]
    ppml cost -f MANIFEST.yaml [-f MORE.yaml]

``-f`` prices every PrivateTrainingJob and FederatedJob in the files exactly as the operator
will reserve them (one charge per budget charged). Add ``--json`` for machine-readable output;
every value is a decimal string.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ppml_operator.cli import fail
from ppml_operator.cli._common import (
    UsageError,
    count_type,
    delta_type,
    epsilon_type,
    load_documents,
    positive_decimal_type,
    rate_type,
    table,
    write_json,
)

PROG = "ppml cost"
JOB_KINDS = ("PrivateTrainingJob", "FederatedJob")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``ppml cost``'s options to ``parser``."""
    parser.description = __doc__.split("\n\n")[0] if __doc__ else None
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        metavar="MANIFEST.yaml",
        help="price the jobs in this file (repeatable; - reads stdin)",
    )
    parser.add_argument(
        "--noise-multiplier",
        type=positive_decimal_type,
        metavar="Z",
        help="noise standard deviation over the clipping norm",
    )
    parser.add_argument(
        "--target-epsilon",
        type=epsilon_type,
        metavar="E",
        help="calibrate: the smallest noise multiplier spending at most E",
    )
    parser.add_argument(
        "--sample-rate",
        type=rate_type,
        metavar="Q",
        help="Poisson sampling rate: expected batch size / records",
    )
    parser.add_argument("--steps", type=count_type, metavar="T", help="number of noisy steps")
    parser.add_argument(
        "--delta", type=delta_type, metavar="D", help="the delta of (epsilon, delta)"
    )
    parser.add_argument(
        "--accountant",
        choices=("rdp", "pld"),
        type=str.lower,
        default="rdp",
        help="accountant (default: rdp)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``ppml cost``; return the exit code."""
    try:
        if args.filename:
            for option in ("noise_multiplier", "target_epsilon", "sample_rate", "steps", "delta"):
                if getattr(args, option) is not None:
                    raise UsageError(
                        f"argument --{option.replace('_', '-')}: not allowed with argument -f"
                    )
            return _manifest(args)
        return _parameters(args)
    except UsageError as err:
        return fail(PROG, str(err))


def _parameters(args: argparse.Namespace) -> int:
    from ppml_operator.privacy import (
        Accountant,
        CalibrationError,
        DpSgdEvent,
        calibrate_noise_multiplier,
        epsilon_of,
        event_to_dict,
        format_cost,
    )
    from ppml_operator.privacy.decimals import format_decimal

    if (args.noise_multiplier is None) == (args.target_epsilon is None):
        raise UsageError(
            "argument --noise-multiplier: give exactly one of --noise-multiplier, "
            "--target-epsilon or -f"
        )
    for option in ("sample_rate", "steps", "delta"):
        if getattr(args, option) is None:
            raise UsageError(f"argument --{option.replace('_', '-')}: required")
    accountant = Accountant.parse(args.accountant)
    calibrated = args.noise_multiplier is None
    if calibrated:
        try:
            result = calibrate_noise_multiplier(
                args.target_epsilon, args.sample_rate, args.steps, args.delta, accountant
            )
        except CalibrationError as err:
            raise UsageError(f"argument --target-epsilon: {err}") from err
        noise, epsilon = result.noise_multiplier, result.epsilon
    else:
        noise = args.noise_multiplier
        epsilon = epsilon_of(
            [DpSgdEvent(noise, args.sample_rate, args.steps)], args.delta, accountant
        )
    event = DpSgdEvent(noise, args.sample_rate, args.steps)
    out: dict[str, Any] = {
        "epsilon": format_cost(epsilon),
        "delta": format_decimal(args.delta),
        "accountant": accountant.value,
        "noiseMultiplier": format_decimal(noise),
        "sampleRate": format_decimal(args.sample_rate),
        "steps": args.steps,
        "events": [event_to_dict(event)],
    }
    if calibrated:
        out["targetEpsilon"] = format_decimal(args.target_epsilon)
    if args.json:
        write_json(out)
        return 0
    headers = ["NOISE MULTIPLIER", "SAMPLE RATE", "STEPS", "DELTA", "ACCOUNTANT", "EPSILON"]
    row = [
        out["noiseMultiplier"],
        out["sampleRate"],
        out["steps"],
        out["delta"],
        out["accountant"],
        out["epsilon"],
    ]
    if calibrated:
        headers.insert(0, "TARGET EPSILON")
        row.insert(0, out["targetEpsilon"])
    sys.stdout.write(table(headers, [row]))
    return 0


def charges_of(paths: list[str]) -> list[Any]:
    """Return the charges (``JobCharge``) of every job in the files, in file order.

    Raises
    ------
    UsageError
        If a file is unreadable, holds no job, or a job's spec is invalid.

    """
    from ppml_operator.api.errors import InvalidSpecError
    from ppml_operator.reconcile.cost import job_charges

    charges: list[Any] = []
    jobs = 0
    for path, document in load_documents(paths):
        if document.get("kind") not in JOB_KINDS:
            continue
        jobs += 1
        name = (document.get("metadata") or {}).get("name", "?")
        try:
            charges.extend(job_charges(document))
        except InvalidSpecError as err:
            raise UsageError(f"argument -f: {document['kind']} {name} in {path}: {err}") from err
    if not jobs:
        raise UsageError(
            f"argument -f: {', '.join(paths)} holds no PrivateTrainingJob or FederatedJob"
        )
    return charges


def charge_to_dict(charge: Any) -> dict[str, Any]:
    """Return the JSON form of one ``JobCharge``: what the operator will reserve."""
    from ppml_operator.privacy import event_to_dict, format_cost
    from ppml_operator.privacy.decimals import format_decimal

    out: dict[str, Any] = {
        "kind": charge.kind,
        "name": charge.name,
        "budget": charge.budget,
        "epsilon": format_cost(charge.epsilon),
        "delta": format_decimal(charge.delta),
    }
    accountant = getattr(charge, "accountant", None)
    if accountant is not None:
        out["accountant"] = str(getattr(accountant, "value", accountant))
    for attribute, key in (
        ("noise_multiplier", "noiseMultiplier"),
        ("sample_rate", "sampleRate"),
        ("steps", "steps"),
    ):
        value = getattr(charge, attribute, None)
        if value is not None:
            out[key] = value if isinstance(value, int) else format_decimal(value)
    out["events"] = [event_to_dict(event) for event in charge.events]
    return out


def _manifest(args: argparse.Namespace) -> int:
    charges = [charge_to_dict(charge) for charge in charges_of(args.filename)]
    if args.json:
        write_json({"charges": charges})
        return 0
    rows = [
        [
            c["kind"],
            c["name"],
            c["budget"],
            c["epsilon"],
            c["delta"],
            c.get("accountant", ""),
            len(c["events"]),
        ]
        for c in charges
    ]
    sys.stdout.write(
        table(["KIND", "NAME", "BUDGET", "EPSILON", "DELTA", "ACCOUNTANT", "EVENTS"], rows)
    )
    return 0
