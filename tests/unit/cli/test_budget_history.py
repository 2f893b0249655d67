"""`ppml budget history`: the ledger recomposed charge by charge with the real accountant."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ppml_operator.cli.history import HistoryError, compute_history, format_history, plot_history
from ppml_operator.privacy.accountant import epsilon_of
from ppml_operator.privacy.events import DpSgdEvent, event_to_dict

DELTA = "1e-5"


def dpsgd(noise: str, q: str, steps: int) -> DpSgdEvent:
    return DpSgdEvent(Decimal(noise), Decimal(q), steps)


class BudgetBuilder:
    """make_budget("records").epsilon("8").charge(...).obj()"""

    def __init__(self, name: str) -> None:
        self._name = name
        self._epsilon = "8"
        self._composition = "RDP"
        self._charges: list[dict] = []

    def epsilon(self, eps: str) -> BudgetBuilder:
        self._epsilon = eps
        return self

    def composition(self, c: str) -> BudgetBuilder:
        self._composition = c
        return self

    def charge(self, job: str, event: DpSgdEvent, state: str, at: str) -> BudgetBuilder:
        stamp = {"Committed": "committedAt", "Reserved": "reservedAt", "Released": "releasedAt"}
        entry = {
            "jobUID": f"uid-{job}",
            "jobKind": "PrivateTrainingJob",
            "jobName": job,
            "state": state,
            "events": [event_to_dict(event)],
            "epsilon": str(epsilon_of([event], DELTA)),
            "reservedAt": at,
            stamp[state]: at,
        }
        self._charges.append(entry)
        return self

    def obj(self) -> dict:
        return {
            "apiVersion": "ppml.dev/v1alpha1",
            "kind": "PrivacyBudget",
            "metadata": {"name": self._name, "namespace": "clinic"},
            "spec": {"epsilon": self._epsilon, "delta": DELTA, "composition": self._composition},
            "status": {"charges": list(self._charges)},
        }


def make_budget(name: str = "records") -> BudgetBuilder:
    return BudgetBuilder(name)


A = dpsgd("1.1", "0.01", 500)
B = dpsgd("1.3", "0.02", 300)
C = dpsgd("0.9", "0.005", 800)


def test_one_charge_costs_its_standalone_epsilon():
    h = compute_history(make_budget().charge("a", A, "Committed", "2026-12-01T10:00:00Z").obj())
    [p] = h.committed
    assert p.composed_epsilon == epsilon_of([A], DELTA)
    assert p.summed_epsilon == p.charge_epsilon


def test_charges_compose_in_commit_order_whatever_the_list_order():
    budget = (
        make_budget()
        .charge("late", B, "Committed", "2026-12-01T12:00:00Z")
        .charge("early", A, "Committed", "2026-12-01T10:00:00Z")
        .charge("middle", C, "Committed", "2026-12-01T11:00:00Z")
        .obj()
    )
    h = compute_history(budget)
    assert [p.job for p in h.committed] == ["early", "middle", "late"]
    composed = [p.composed_epsilon for p in h.committed]
    assert composed == sorted(composed), "spent never decreases"
    assert composed[-1] == epsilon_of([A, C, B], DELTA)


def test_composition_spends_less_than_the_sum_of_epsilons():
    budget = make_budget()
    for i in range(4):
        budget.charge(f"job-{i}", A, "Committed", f"2026-12-01T1{i}:00:00Z")
    h = compute_history(budget.obj())
    last = h.committed[-1]
    assert last.composed_epsilon < last.summed_epsilon
    assert last.summed_epsilon >= 4 * epsilon_of([A], DELTA) - Decimal("1e-6")


def test_basic_composition_adds_epsilons_up():
    budget = (
        make_budget()
        .composition("Basic")
        .charge("a", A, "Committed", "2026-12-01T10:00:00Z")
        .charge("b", B, "Committed", "2026-12-01T11:00:00Z")
        .obj()
    )
    h = compute_history(budget)
    assert h.committed[-1].composed_epsilon == h.committed[-1].summed_epsilon


def test_released_charges_cost_nothing_and_reserved_ones_stack_on_top():
    budget = (
        make_budget()
        .charge("done", A, "Committed", "2026-12-01T10:00:00Z")
        .charge("never-started", B, "Released", "2026-12-01T10:30:00Z")
        .charge("running", C, "Reserved", "2026-12-01T11:00:00Z")
        .obj()
    )
    h = compute_history(budget)
    assert [p.job for p in h.committed] == ["done"]
    assert [p.job for p in h.reserved] == ["running"]
    assert h.reserved[0].composed_epsilon == epsilon_of([A, C], DELTA)
    text = format_history(h)
    assert "never-started" not in text and "running" in text and "Reserved" in text


def test_a_charge_without_events_is_reported_not_guessed():
    budget = make_budget().charge("a", A, "Committed", "2026-12-01T10:00:00Z").obj()
    budget["status"]["charges"][0]["events"] = []
    with pytest.raises(HistoryError, match="charge of a lists no privacy events"):
        compute_history(budget)


def test_the_plot_is_a_png(tmp_path):
    budget = (
        make_budget()
        .epsilon("3")
        .charge("a", A, "Committed", "2026-12-01T10:00:00Z")
        .charge("b", B, "Committed", "2026-12-01T10:20:00Z")
        .charge("c", C, "Reserved", "2026-12-01T10:40:00Z")
        .obj()
    )
    out = tmp_path / "history.png"
    plot_history(compute_history(budget), out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


@pytest.mark.parametrize(
    ("second", "longest"),
    [
        pytest.param("10:00:41", 120, id="two demo jobs 29 seconds apart"),
        pytest.param("10:00:12", 120, id="two jobs committed in the same second"),
    ],
)
def test_the_time_axis_spans_the_charges_not_a_year(second, longest):
    """Issue 13: charges within one minute drew an axis of about a year (or repeated labels)."""
    import matplotlib.pyplot as plt
    from matplotlib.dates import num2date

    from ppml_operator.cli.history import draw_history

    budget = (
        make_budget("demo")
        .epsilon("3")
        .charge("a", A, "Committed", "2026-12-01T10:00:12Z")
        .charge("b", B, "Committed", f"2026-12-01T{second}Z")
        .obj()
    )
    fig = draw_history(compute_history(budget))
    try:
        ax = fig.axes[0]
        left, right = (num2date(x) for x in ax.get_xlim())
        assert 60 <= (right - left).total_seconds() <= longest
        fig.canvas.draw()
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert len(set(labels)) >= 3, labels  # was "12-01 10:00" under every tick
        assert "2026" in ax.xaxis.get_offset_text().get_text()  # the year, once
    finally:
        plt.close(fig)
