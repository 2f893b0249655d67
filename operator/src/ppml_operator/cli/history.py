"""``ppml budget history NAME``: epsilon spent over time, job by job, with the budget line.

The history is recomputed from the budget's ledger (``status.charges``) with the same accountant
the operator charges with (:class:`ppml_operator.privacy.ledger.LedgerAccount`): charges are
composed in the order they were committed, and after each one the composed epsilon is recorded.
Reserved charges are shown on top (what the budget would have spent if they all finish), and
the naive sum of the charges' standalone epsilons is shown beside the composed curve, so the
plot shows what composition saves. Released charges (no pod ever started) cost nothing.

:func:`compute_history` is pure; :func:`plot_history` draws with matplotlib (a dev extra,
imported only when ``--plot`` is given).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from ppml_operator.privacy.decimals import round_up, to_decimal
from ppml_operator.privacy.events import PrivacyEvent, event_from_dict
from ppml_operator.privacy.ledger import LedgerAccount

Obj = Mapping[str, Any]


class HistoryError(Exception):
    """The budget's ledger cannot be turned into a history (the message says why)."""


@dataclass(frozen=True)
class Point:
    """The budget after one charge was committed (or, for ``reserved``, reserved)."""

    time: datetime
    job: str
    state: str
    charge_epsilon: Decimal
    composed_epsilon: Decimal
    summed_epsilon: Decimal


@dataclass(frozen=True)
class History:
    """A budget's spending over time."""

    namespace: str
    name: str
    total: Decimal
    delta: Decimal
    delta_text: str
    composition: str
    start: Decimal
    committed: tuple[Point, ...]
    reserved: tuple[Point, ...]


def _time(text: object, what: str) -> datetime:
    if not isinstance(text, str) or not text:
        raise HistoryError(f"{what} has no timestamp")
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _events(raw: object, what: str) -> list[PrivacyEvent]:
    if not isinstance(raw, list) or not raw:
        raise HistoryError(f"{what} lists no privacy events")
    return [event_from_dict(dict(e)) for e in raw]


def compute_history(budget: Obj) -> History:
    """Recompose a budget's ledger charge by charge.

    Parameters
    ----------
    budget
        A PrivacyBudget object in wire form.

    Returns
    -------
    History
        The composed and summed epsilon after each committed charge (in commit order), then
        after each reserved charge on top of them (in reservation order).

    Raises
    ------
    HistoryError
        When a charge has no events or no timestamp.

    """
    meta = budget.get("metadata") or {}
    spec = budget.get("spec") or {}
    status = budget.get("status") or {}
    delta = to_decimal(spec.get("delta"), "spec.delta")
    composition = str(spec.get("composition") or "RDP")
    account = LedgerAccount(composition, delta)
    summed = Decimal(0)
    folded = status.get("folded") or {}
    if folded.get("count"):
        account.add(_events(folded.get("events"), "status.folded"), key="folded")
        summed += to_decimal(folded.get("basicEpsilon") or folded.get("epsilon") or 0, "folded")
    start = account.spent_epsilon()

    charges = [c for c in status.get("charges") or [] if c.get("state") != "Released"]
    committed = sorted(
        (c for c in charges if c.get("state") == "Committed"),
        key=lambda c: _time(c.get("committedAt"), f"charge of {c.get('jobName')}"),
    )
    reserved = sorted(
        (c for c in charges if c.get("state") == "Reserved"),
        key=lambda c: _time(c.get("reservedAt"), f"charge of {c.get('jobName')}"),
    )
    points: dict[str, list[Point]] = {"Committed": [], "Reserved": []}
    for state, group, stamp in (
        ("Committed", committed, "committedAt"),
        ("Reserved", reserved, "reservedAt"),
    ):
        for c in group:
            what = f"charge of {c.get('jobName')}"
            account.add(_events(c.get("events"), what), key=str(c.get("jobUID")))
            charge_eps = to_decimal(c.get("epsilon", 0), f"{what} epsilon")
            summed += charge_eps
            points[state].append(
                Point(
                    time=_time(c.get(stamp), what),
                    job=str(c.get("jobName", "")),
                    state=state,
                    charge_epsilon=charge_eps,
                    composed_epsilon=account.spent_epsilon(),
                    summed_epsilon=round_up(summed),
                )
            )
    return History(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        total=to_decimal(spec.get("epsilon"), "spec.epsilon"),
        delta=delta,
        delta_text=str(spec.get("delta")),
        composition=composition,
        start=start,
        committed=tuple(points["Committed"]),
        reserved=tuple(points["Reserved"]),
    )


def format_history(h: History) -> str:
    """Render a history as a table (what ``ppml budget history`` prints)."""
    lines = [
        f"{h.namespace}/{h.name}: ε {h.total} at δ {h.delta_text}, {h.composition} composition",
        f"{'TIME':<20} {'STATE':<9} {'JOB':<32} {'CHARGE':>8} {'COMPOSED':>9} {'SUMMED':>8}",
    ]
    if h.start:
        lines.append(f"{'(folded)':<20} {'':<9} {'':<32} {'':>8} {h.start:>9} {'':>8}")
    for p in (*h.committed, *h.reserved):
        lines.append(
            f"{p.time.strftime('%Y-%m-%d %H:%M:%S'):<20} {p.state:<9} {p.job:<32} "
            f"{p.charge_epsilon:>8} {p.composed_epsilon:>9} {p.summed_epsilon:>8}"
        )
    return "\n".join(lines) + "\n"


MIN_TIME_PADDING = timedelta(seconds=30)
"""Room left of the first and right of the last event: a lone charge gets a one-minute window."""


def plot_history(h: History, path: Path) -> None:
    """Draw epsilon spent over time, job by job, with the budget's total as a line.

    Parameters
    ----------
    h
        The history to draw.
    path
        Where to write the image (the format follows the suffix: .png, .svg, .pdf).

    Raises
    ------
    HistoryError
        When matplotlib is not installed.

    """
    fig = draw_history(h)  # raises HistoryError without matplotlib
    import matplotlib.pyplot as plt

    fig.savefig(path)
    plt.close(fig)


def draw_history(h: History) -> Any:
    """Return the matplotlib figure :func:`plot_history` saves.

    The time axis spans the events themselves, padded by 8% of their span and at least
    :data:`MIN_TIME_PADDING` on each side: two charges a few seconds apart (the demo) get an axis
    of about a minute with tick labels in seconds, not matplotlib's default of years around a
    single instant. The ticks say only what changes between them; the date, with its year, is
    written once at the axis' end.

    Raises
    ------
    HistoryError
        When matplotlib is not installed.

    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise HistoryError("--plot needs matplotlib: pip install 'ppml-operator[dev]'") from err

    date2num: Any = mdates.date2num  # untyped upstream
    date_locator: Any = mdates.AutoDateLocator
    concise_formatter: Any = mdates.ConciseDateFormatter

    def num(times: Sequence[datetime]) -> Any:
        return date2num(list(times))

    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    points = list(h.committed)
    if points:
        # Hold the last value until the last event shown (a reservation may come later).
        end = max([p.time for p in (*points, *h.reserved)])
        times = [points[0].time, *[p.time for p in points], end]
        composed = [float(h.start), *[float(p.composed_epsilon) for p in points]]
        composed.append(composed[-1])
        summed = [float(h.start), *[float(p.summed_epsilon) for p in points]]
        summed.append(summed[-1])
        ax.step(num(times), composed, where="post", color="tab:blue", lw=2,
                label=f"spent ({h.composition} composition)")
        ax.step(num(times), summed, where="post", color="tab:gray", lw=1, ls=":",
                label="spent if epsilons simply added up")
        ax.scatter(num([p.time for p in points]), [float(p.composed_epsilon) for p in points],
                   color="tab:blue", zorder=3)
        for p in points:
            ax.annotate(p.job, (float(num([p.time])[0]), float(p.composed_epsilon)),
                        textcoords="offset points", xytext=(4, 6), fontsize=8, rotation=20)
    if h.reserved:
        base = points[-1] if points else None
        rtimes = ([base.time] if base else []) + [p.time for p in h.reserved]
        rvals = ([float(base.composed_epsilon)] if base else []) + [
            float(p.composed_epsilon) for p in h.reserved
        ]
        ax.step(num(rtimes), rvals, where="post", color="tab:orange", lw=1.5, ls="--",
                label="spent + reserved (running jobs)")
        for p in h.reserved:
            ax.annotate(p.job, (float(num([p.time])[0]), float(p.composed_epsilon)),
                        textcoords="offset points", xytext=(4, -12), fontsize=8,
                        color="tab:orange")
    ax.axhline(float(h.total), color="tab:red", lw=1.5, label=f"budget ε = {h.total}")
    ax.set_ylim(0, max(float(h.total) * 1.1, *(float(p.summed_epsilon) * 1.05 for p in points),
                       0.1))
    shown = [p.time for p in (*points, *h.reserved)]
    if shown:
        first, last = min(shown), max(shown)
        pad = max((last - first) * 0.08, MIN_TIME_PADDING)
        ax.set_xlim(*num([first - pad, last + pad]))
    locator = date_locator(tz=UTC, minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(concise_formatter(locator, tz=UTC))
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel(f"epsilon at δ = {h.delta_text}")
    ax.set_title(f"PrivacyBudget {h.namespace}/{h.name}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``ppml budget history``'s arguments to ``parser``."""
    parser.add_argument("name", help="the PrivacyBudget's name")
    parser.add_argument("-n", "--namespace", help="the budget's namespace (default: context's)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG)")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw the history")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``ppml budget history``; return the exit code."""
    from ppml_operator.cli.status import api_error_message, current_namespace, get_object

    namespace = args.namespace or current_namespace(args.kubeconfig)
    try:
        budget = get_object("PrivacyBudget", namespace, args.name, args.kubeconfig)
    except Exception as err:  # ApiException, connection errors: one line, not a traceback
        sys.stderr.write(f"ppml budget history: {api_error_message(err, namespace)}\n")
        return 1
    if budget is None:
        sys.stderr.write(f"PrivacyBudget {namespace}/{args.name} not found\n")
        return 1
    try:
        history = compute_history(budget)
        sys.stdout.write(format_history(history))
        if args.plot:
            plot_history(history, args.plot)
            sys.stdout.write(f"Wrote {args.plot}\n")
    except HistoryError as err:
        sys.stderr.write(f"ppml budget history: {err}\n")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ppml budget history`` on its own."""
    parser = argparse.ArgumentParser(
        prog="ppml budget history", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))
