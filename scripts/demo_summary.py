"""Print the demo's progress lines, its final summary, or whether every job has finished.

Reads the jobs and budgets of the given namespaces through the API server (the devcluster
kubeconfig): in the two-party demo the jobs are in the analyst's namespace and the budget in the
data owner's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

KINDS = ("privatetrainingjobs.ppml.dev", "federatedjobs.ppml.dev")


def _get(resource: str, namespace: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "get", resource, "-n", namespace, "-o", "json"],
        check=True, capture_output=True, text=True,
    ).stdout
    return list(json.loads(out).get("items", []))


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def _state(obj: dict[str, Any]) -> str:
    for type_ in ("Complete", "Failed", "Running", "Admitted"):
        cond = _condition(obj, type_)
        if cond and cond.get("status") == "True":
            return type_
    admitted = _condition(obj, "Admitted")
    if admitted:
        return f"Waiting ({admitted.get('reason', '')})"
    return "Pending"


def _name(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{obj['kind']}/{meta.get('namespace', '')}/{meta['name']}"


def _finished(obj: dict[str, Any]) -> bool:
    return _state(obj) in ("Complete", "Failed")


def main() -> int:
    """Run the command line; the exit status answers --done."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--namespace", action="append", required=True,
                        help="a namespace to read (repeatable)")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--done", action="store_true")
    args = parser.parse_args()
    jobs = [j for ns in args.namespace for kind in KINDS for j in _get(kind, ns)]
    if args.done:
        return 0 if jobs and all(_finished(j) for j in jobs) else 1
    if args.progress:
        for job in jobs:
            status = job.get("status") or {}
            progress = status.get("progress") or {}
            rounds = (status.get("federation") or {}).get("roundsCompleted")
            where = (
                f"round {rounds}/{job['spec'].get('rounds')}" if rounds is not None
                else f"step {progress.get('step', 0)}/{progress.get('totalSteps', '?')}"
                f" epsilon so far {progress.get('epsilonSoFar', '-')}"
            )
            print(f"  {_name(job)}: {_state(job)}, {where}")
        return 0
    print(f"{'JOB':48} {'CONDITION':22} {'ACCURACY':>9} {'EPS CHARGED':>12} {'EPS MEASURED':>13}")
    for job in jobs:
        status = job.get("status") or {}
        privacy = status.get("privacy") or {}
        metrics = status.get("metrics") or {}
        cond = _condition(job, "Complete") or _condition(job, "Failed") or {}
        print(
            f"{_name(job):48} {_state(job):22} "
            f"{metrics.get('testAccuracy', '-'):>9} {privacy.get('epsilon', '-'):>12} "
            f"{privacy.get('measuredEpsilon', '-'):>13}"
        )
        if cond.get("status") == "True" and cond.get("message"):
            print(f"    {cond['message']}")
        uri = (status.get("output") or {}).get("uri")
        if uri:
            print(f"    model: {uri}")
    print()
    print(
        f"{'BUDGET':32} {'EPSILON':>8} {'DELTA':>8} {'SPENT':>10} {'RESERVED':>10} "
        f"{'REMAINING':>10}"
    )
    budgets = [b for ns in args.namespace for b in _get("privacybudgets.ppml.dev", ns)]
    for budget in budgets:
        spec, status = budget["spec"], budget.get("status") or {}
        name = f"{budget['metadata']['namespace']}/{budget['metadata']['name']}"
        print(
            f"{name:32} {spec['epsilon']:>8} {spec['delta']:>8} "
            f"{status.get('spentEpsilon', '-'):>10} {status.get('reservedEpsilon', '-'):>10} "
            f"{status.get('remainingEpsilon', '-'):>10}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
