"""Group commit of budget writes: many jobs' ledger operations in one compare-and-swap.

A budget is one object; every admission, commit and release on it is a compare-and-swap of its
status, so one budget admits at most as many jobs per second as the API server stores writes of
that (growing) object. Within one operator process, passes that want to write the same budget
queue here; one of them (the leader) takes the whole queue, decides each queued pass again, in
arrival order, against the budget as the previous ones left it (pure ``decide``, so a job that no
longer fits simply gets its waiting plan instead), and stores the result with a single
``PUT .../status`` carrying the resourceVersion it started from. On 409 nothing of the batch
was applied and every pass in it re-observes, exactly as a lone writer would.

The compare-and-swap still guards against every other writer (another operator, the budget's
own reconcile); the queue only stops this process's writers from racing each other. Passes of
every kind share the queue of a budget (a PrivateTrainingJob's reservation and a federation's
commit on the same budget go out in one write). A plan writing several budgets (a federation
whose silos charge different budgets) is not batched: its writes go out one by one, in the
plan's order, each a compare-and-swap of its own.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ppml_operator import k8s
from ppml_operator.handlers.act import write_budget
from ppml_operator.reconcile.lifecycle import Observed
from ppml_operator.reconcile.plan import BudgetWrite, Plan

Obj = dict[str, Any]
Decide = Callable[[Observed, datetime], Plan]


@dataclasses.dataclass
class _Pass:
    observed: Observed
    budget: Obj
    key: str
    plan: Plan
    decide: Decide
    now: Callable[[], datetime]
    logger: logging.Logger
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    result: Plan | None = None
    error: BaseException | None = None


@dataclasses.dataclass
class _Queue:
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    waiting: list[_Pass] = dataclasses.field(default_factory=list)
    leader: bool = False
    # Versions this process stored, keyed by the resourceVersion each replaced: following the
    # chain from what a pass observed gives the newest version known to follow it (never a
    # guess about versions others wrote; those make the compare-and-swap fail instead).
    successors: dict[str, Obj] = dataclasses.field(default_factory=dict)

    def newest_after(self, budget: Obj) -> Obj:
        """Return the newest version this process stored on top of ``budget``, else it."""
        seen = 0
        rv = budget["metadata"].get("resourceVersion")
        while rv in self.successors and seen < len(self.successors):
            budget = self.successors[rv]
            rv = budget["metadata"].get("resourceVersion")
            seen += 1
        return budget

    def stored(self, base: Obj, result: Obj) -> None:
        """Remember that ``result`` replaced ``base`` (bounded memory)."""
        self.successors[str(base["metadata"].get("resourceVersion"))] = result
        while len(self.successors) > 32:
            self.successors.pop(next(iter(self.successors)))


_queues: dict[tuple[str, str], _Queue] = {}
_guard = threading.Lock()

MAX_BATCH = 64
"""Most passes combined into one write."""


def _queue(namespace: str, name: str) -> _Queue:
    with _guard:
        return _queues.setdefault((namespace, name), _Queue())


def write_ledger(
    client: k8s.Client,
    observed: Observed,
    plan: Plan,
    decide: Decide,
    now: Callable[[], datetime],
    logger: logging.Logger,
) -> Plan:
    """Store a pass's budget writes (batched with concurrent passes on the same budget).

    Returns
    -------
    Plan
        The plan to act on, its budget writes done (possibly re-decided against a newer
        budget: a job that no longer fits gets its waiting plan).

    Raises
    ------
    k8s.ConflictError
        When the combined write lost its compare-and-swap (nothing of it was applied).

    """
    targets = {(w.budget["metadata"]["namespace"], w.budget["metadata"]["name"])
               for w in plan.budget_writes}
    if len(targets) != 1:  # several budgets: no batching, in the plan's order
        for write in plan.budget_writes:
            write_budget(client, write, logger)
        return dataclasses.replace(plan, budget_writes=[])
    [key] = targets
    queue = _queue(*key)
    # The base is what this pass's decide read (the write carries it) and the budget's name is
    # its key in ``observed.budgets``.
    mine = _Pass(observed, plan.budget_writes[0].budget, key[1], plan, decide, now, logger)
    with queue.lock:
        queue.waiting.append(mine)
        lead = not queue.leader
        queue.leader = queue.leader or lead
    if lead:
        while True:
            with queue.lock:
                batch, queue.waiting = queue.waiting[:MAX_BATCH], queue.waiting[MAX_BATCH:]
                if not batch:
                    queue.leader = False
                    break
            _flush(client, queue, batch)
    mine.done.wait()
    if mine.error is not None:
        raise mine.error
    assert mine.result is not None
    return mine.result


def _flush(client: k8s.Client, queue: _Queue, batch: list[_Pass]) -> None:
    """Store a batch in one write, or each pass alone when the write is refused.

    A lost race (409) fails every pass of the batch (nothing was applied; each re-observes).
    Any other failure of the combined write is retried pass by pass, so one member whose write
    is refused (a 422 on its own entry) does not fail the others.
    """
    try:
        _write_batch(client, queue, batch)
    except k8s.ConflictError as err:  # nothing was applied: every pass re-observes
        for item in batch:
            item.error = err
    except Exception as err:
        if len(batch) == 1:
            batch[0].error = err
        else:
            for item in batch:
                item.error = item.result = None
                try:
                    _write_batch(client, queue, [item])
                except Exception as alone:
                    item.error = alone
    finally:
        for item in batch:
            item.done.set()


def _write_batch(client: k8s.Client, queue: _Queue, batch: list[_Pass]) -> None:
    """Decide every pass again in order against the budget as the previous left it; write once.

    A pass whose decision fails, or that now wants to write another budget too, gets its own
    error (the latter a conflict: it re-observes) and is left out of the write.
    """
    # Start from the newest version any pass of the batch has seen (passes observed at
    # different times); a wrong pick costs one 409, never a wrong ledger.
    candidates = [queue.newest_after(item.budget) for item in batch]
    unreplaced = [b for b in candidates
                  if str(b["metadata"].get("resourceVersion")) not in queue.successors]
    base = (unreplaced or candidates)[-1]
    current = base
    writes: list[BudgetWrite] = []
    members: list[_Pass] = []
    for item in batch:
        observed = dataclasses.replace(
            item.observed, budgets={**item.observed.budgets, item.key: current})
        try:
            plan = item.decide(observed, item.now())
        except Exception as err:
            item.error = err
            continue
        if any(w.budget["metadata"]["name"] != item.key for w in plan.budget_writes):
            item.error = k8s.ConflictError(
                409, "Conflict", f"the pass now writes budgets other than {item.key}")
            continue
        for write in plan.budget_writes:
            writes.append(write)
            current = {**current, "status": write.status}
        item.result = dataclasses.replace(plan, budget_writes=[])
        members.append(item)
    if writes:
        operation = "+".join(sorted({w.operation for w in writes}))
        combined = BudgetWrite(
            base, current["status"], operation, writes[0].job_uid,
            "; ".join(w.message for w in writes),
        )
        queue.stored(base, write_budget(client, combined, members[0].logger))
