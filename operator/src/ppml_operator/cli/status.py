"""``ppml status``: privacy budgets as bars and jobs with their progress, at a glance.

The view is built in two steps: :func:`collect` reads budgets and jobs from the API server
(the only part that needs a cluster), then the pure :func:`render_status` turns the objects into
text. Each budget is one bar, ``█`` spent, ``▒`` reserved, ``·`` remaining, scaled to the
budget's total epsilon; each job is one line with its state, its budget and a progress bar.

Also installed as the kubectl plugin ``kubectl ppml`` (``bin/kubectl-ppml``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

GROUP = "ppml.dev"
"""The API group of the three kinds."""
VERSION = "v1alpha1"
"""The served version."""
PLURALS = {
    "PrivacyBudget": "privacybudgets",
    "PrivateTrainingJob": "privatetrainingjobs",
    "FederatedJob": "federatedjobs",
}
"""Plural resource name of each kind."""
SHORT_KIND = {"PrivateTrainingJob": "ptj", "FederatedJob": "fedjob"}
"""Short name shown in the job list."""

SPENT_CHAR = "█"
RESERVED_CHAR = "▒"
REMAINING_CHAR = "·"

Obj = Mapping[str, Any]


def _decimal(text: object) -> Decimal:
    """Parse a decimal string from status; absent or malformed values read as zero."""
    try:
        return Decimal(str(text)) if text not in (None, "") else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def _conditions(obj: Obj) -> dict[str, Mapping[str, Any]]:
    status = obj.get("status") or {}
    return {c.get("type", ""): c for c in status.get("conditions") or []}


@dataclass(frozen=True)
class BudgetView:
    """What one budget line shows."""

    namespace: str
    name: str
    total: Decimal
    delta: str
    spent: Decimal
    reserved: Decimal
    remaining: Decimal
    exhausted: bool
    charges: int

    @classmethod
    def of(cls, budget: Obj) -> BudgetView:
        """Build the view of a PrivacyBudget object (wire form)."""
        spec = budget.get("spec") or {}
        status = budget.get("status") or {}
        total = _decimal(spec.get("epsilon"))
        spent = _decimal(status.get("spentEpsilon"))
        reserved = _decimal(status.get("reservedEpsilon"))
        if status.get("remainingEpsilon") is not None:
            left = _decimal(status.get("remainingEpsilon"))
        else:
            left = max(total - spent - reserved, Decimal(0))
        exhausted = _conditions(budget).get("Exhausted", {}).get("status") == "True"
        meta = budget.get("metadata") or {}
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            total=total,
            delta=str(spec.get("delta", "")),
            spent=spent,
            reserved=reserved,
            remaining=left,
            exhausted=exhausted,
            charges=len(status.get("charges") or []),
        )


@dataclass(frozen=True)
class JobView:
    """What one job line shows."""

    kind: str
    namespace: str
    name: str
    state: str
    detail: str
    budgets: tuple[str, ...]
    fraction: float | None
    progress: str
    epsilon: str

    @classmethod
    def of(cls, job: Obj) -> JobView:
        """Build the view of a PrivateTrainingJob or FederatedJob object (wire form)."""
        meta = job.get("metadata") or {}
        spec = job.get("spec") or {}
        status = job.get("status") or {}
        state, detail = job_state(job)
        fraction, progress = job_progress(job)
        privacy = status.get("privacy") or {}
        charged = privacy.get("epsilon")
        measured = privacy.get("measuredEpsilon") or (status.get("progress") or {}).get(
            "epsilonSoFar"
        )
        epsilon = ""
        if measured is not None and state not in ("Complete", "Failed"):
            epsilon = f"ε {_fmt(_decimal(measured))} so far"
            epsilon += f" of {charged}" if charged is not None else ""
        elif charged is not None:
            epsilon = f"ε {charged}"
        accuracy = (status.get("metrics") or {}).get("testAccuracy")
        if accuracy is not None:
            epsilon += f"  accuracy {_fmt(_decimal(accuracy))}"
        return cls(
            kind=str(job.get("kind", "")),
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            state=state,
            detail=detail,
            budgets=tuple(budget_names(spec)),
            fraction=fraction,
            progress=progress,
            epsilon=epsilon.strip(),
        )


def budget_names(spec: Obj) -> list[str]:
    """Return the names of the budgets a job's spec draws on, in order, without repeats."""
    names: list[str] = []
    refs: list[Any] = [spec.get("budgetRef")]
    refs += [c.get("budgetRef") for c in spec.get("clients") or [] if isinstance(c, Mapping)]
    for ref in refs:
        if isinstance(ref, Mapping) and ref.get("name") and ref["name"] not in names:
            names.append(str(ref["name"]))
    return names


def job_state(job: Obj) -> tuple[str, str]:
    """Return a one-word state of a job and the reason behind it, read from its conditions.

    Terminal conditions win (Failed, then Complete); then Suspended; then admission (a job whose
    ``Admitted`` condition is False waits for budget); then Running.
    """
    conds = _conditions(job)

    def true(t: str) -> Mapping[str, Any] | None:
        c = conds.get(t)
        return c if c is not None and c.get("status") == "True" else None

    for type_, word in (("Failed", "Failed"), ("Complete", "Complete"), ("Suspended", "Suspended")):
        c = true(type_)
        if c is not None:
            return word, str(c.get("reason", ""))
    admitted = conds.get("Admitted")
    if admitted is not None and admitted.get("status") == "False":
        return "Waiting", str(admitted.get("reason", ""))
    if true("Running") is not None:
        return "Running", ""
    if true("Admitted") is not None:
        return "Admitted", str(conds["Admitted"].get("reason", ""))
    return "Pending", ""


def job_progress(job: Obj) -> tuple[float | None, str]:
    """Return the fraction done (None when unknown) and a short text, from a job's status.

    A PrivateTrainingJob reports ``status.progress.step`` of ``totalSteps`` (polled by the
    operator from the runtime); a FederatedJob ``status.federation.roundsCompleted`` of
    ``spec.rounds``. A completed job is done whatever its last progress report said.
    """
    status = job.get("status") or {}
    progress = status.get("progress") or {}
    federation = status.get("federation") or {}
    candidates = (
        (progress.get("step"), progress.get("totalSteps"), "step"),
        (federation.get("roundsCompleted"), (job.get("spec") or {}).get("rounds"), "round"),
    )
    complete = job_state(job)[0] == "Complete"
    for done, total, unit in candidates:
        if isinstance(done, int | float) and isinstance(total, int | float) and total > 0:
            frac = 1.0 if complete else min(max(float(done) / float(total), 0.0), 1.0)
            return frac, f"{unit} {int(done)}/{int(total)}"
    if complete:
        return 1.0, "done"
    return None, ""


def bar(parts: Sequence[tuple[Decimal | float, str]], total: Decimal | float, width: int) -> str:
    """Draw a bar of ``width`` cells: each part takes its share of ``total``, the rest is empty.

    Cells are rounded so that the parts never exceed the width and a non-zero part always shows
    at least one cell (an almost-empty budget does not look untouched).
    """
    width = max(width, 1)
    total_f = float(total)
    cells: list[str] = []
    for value, char in parts:
        v = float(value)
        if total_f <= 0 or v <= 0:
            continue
        n = round(v / total_f * width)
        n = max(n, 1)
        n = min(n, width - len(cells))
        cells += [char] * n
    return "".join(cells) + REMAINING_CHAR * (width - len(cells))


def _fmt(value: Decimal) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def render_budget(b: BudgetView, width: int) -> list[str]:
    """Render one budget as a name line and a bar line."""
    flag = "  EXHAUSTED" if b.exhausted else ""
    charges = f"{b.charges} charge" + ("" if b.charges == 1 else "s")
    head = f"{b.namespace}/{b.name}  ε {_fmt(b.total)} at δ {b.delta}  ({charges}){flag}"
    drawn = bar([(b.spent, SPENT_CHAR), (b.reserved, RESERVED_CHAR)], b.total, width)
    tail = f"spent {_fmt(b.spent)}  reserved {_fmt(b.reserved)}  left {_fmt(b.remaining)}"
    return [head, f"  [{drawn}] {tail}"]


def render_job(j: JobView, width: int) -> str:
    """Render one job as a single line: kind, name, state, budgets, progress bar, epsilon."""
    kind = SHORT_KIND.get(j.kind, j.kind)
    state = f"{j.state} ({j.detail})" if j.detail and j.state in ("Waiting", "Failed") else j.state
    if j.fraction is None:
        drawn = " " * width
        pct = "    "
    else:
        drawn = bar([(j.fraction, SPENT_CHAR)], 1.0, width)
        pct = f"{j.fraction:4.0%}"
    budgets = ",".join(j.budgets) or "-"
    return (
        f"{kind:<6} {j.namespace + '/' + j.name:<34} {state:<28} {budgets:<20} "
        f"[{drawn}] {pct} {j.progress} {j.epsilon}"
    ).rstrip()


def render_status(budgets: Iterable[Obj], jobs: Iterable[Obj], *, width: int = 80) -> str:
    """Render budgets (as bars) and jobs (with progress) as text.

    Parameters
    ----------
    budgets
        PrivacyBudget objects in wire form.
    jobs
        PrivateTrainingJob and FederatedJob objects in wire form.
    width
        Terminal width; bars take what the text around them leaves.

    Returns
    -------
    str
        The text, ending with a newline.

    """
    budget_bar = max(min(width - 50, 60), 10)  # room for "spent .. reserved .. left .."
    job_bar = max(min(width - 100, 30), 10)
    lines = [f"BUDGETS   {SPENT_CHAR} spent  {RESERVED_CHAR} reserved  {REMAINING_CHAR} remaining"]
    views = sorted((BudgetView.of(b) for b in budgets), key=lambda v: (v.namespace, v.name))
    if not views:
        lines.append("  (none)")
    for v in views:
        lines += render_budget(v, budget_bar)
    lines += ["", "JOBS"]
    jviews = sorted((JobView.of(j) for j in jobs), key=lambda v: (v.namespace, v.kind, v.name))
    if not jviews:
        lines.append("  (none)")
    lines += [render_job(j, job_bar) for j in jviews]
    return "\n".join(lines) + "\n"


# -- talking to the cluster (the only impure part) ----------------------------------------------


def collect(
    namespace: str | None, kubeconfig: str | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read budgets and jobs from the API server.

    Parameters
    ----------
    namespace
        One namespace, or None for every namespace the caller may list.
    kubeconfig
        A kubeconfig path; ``KUBECONFIG``, ``~/.kube/config`` or the in-cluster config otherwise.

    Returns
    -------
    tuple
        The budgets, and the jobs of both kinds.

    """
    items = {kind: list_objects(kind, namespace, kubeconfig) for kind in PLURALS}
    jobs = items["PrivateTrainingJob"] + items["FederatedJob"]
    return items["PrivacyBudget"], jobs


def _api(kubeconfig: str | None) -> Any:
    from kubernetes import client

    from ppml_operator.k8s import load_configuration

    return client.CustomObjectsApi(client.ApiClient(load_configuration(kubeconfig)))


def get_object(kind: str, namespace: str, name: str, kubeconfig: str | None = None) -> Obj | None:
    """Read one ppml.dev object; None when it does not exist."""
    from kubernetes.client.exceptions import ApiException

    try:
        obj: dict[str, Any] = _api(kubeconfig).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS[kind], name
        )
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    return obj


def list_objects(
    kind: str, namespace: str | None, kubeconfig: str | None = None
) -> list[dict[str, Any]]:
    """List the objects of one ppml.dev kind, with ``kind`` set on each item."""
    api = _api(kubeconfig)
    plural = PLURALS[kind]
    if namespace:
        answer = api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
    else:
        answer = api.list_cluster_custom_object(GROUP, VERSION, plural)
    items: list[dict[str, Any]] = list(answer.get("items", []))
    for item in items:
        item.setdefault("kind", kind)
    return items


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``ppml status``'s options to ``parser``."""
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="show one namespace (default: the context's)")
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="show every namespace"
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG)")
    parser.add_argument("--width", type=int, default=0, help="output width (default: terminal)")
    parser.set_defaults(func=run)


def current_namespace(kubeconfig: str | None) -> str:
    """Return the namespace of the kubeconfig's current context ("default" when unset)."""
    from kubernetes import config

    contexts: Any = config.list_kube_config_contexts  # untyped upstream
    try:
        _, context = contexts(config_file=kubeconfig)
    except Exception:  # no kubeconfig at all: in-cluster, or nothing
        return "default"
    return str((context or {}).get("context", {}).get("namespace") or "default")


def run(args: argparse.Namespace) -> int:
    """Run ``ppml status``; return the exit code."""
    namespace = None
    if not args.all_namespaces:
        namespace = args.namespace or current_namespace(args.kubeconfig)
    width = args.width or shutil.get_terminal_size((120, 24)).columns
    try:
        budgets, jobs = collect(namespace, args.kubeconfig)
    except Exception as err:  # ApiException, connection errors: one line, not a traceback
        sys.stderr.write(f"ppml status: {api_error_message(err, namespace)}\n")
        return 1
    sys.stdout.write(render_status(budgets, jobs, width=width))
    return 0


def api_error_message(err: Exception, namespace: str | None) -> str:
    """Turn an API failure into one sentence that says what to do."""
    where = f"namespace {namespace}" if namespace else "all namespaces"
    status = getattr(err, "status", None)
    if status == 403:
        return (
            f"you may not list ppml.dev objects in {where}; ask for the ppml-viewer role there"
            + ("" if namespace else ", or name one namespace with -n")
        )
    if status == 404:
        return "the ppml.dev CRDs are not installed in this cluster (helm install ppml ...)"
    reason = getattr(err, "reason", None) or str(err).splitlines()[0]
    return f"could not read {where}: {reason}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ppml status`` on its own (used by ``bin/kubectl-ppml`` and tests)."""
    parser = argparse.ArgumentParser(prog="ppml status", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))
