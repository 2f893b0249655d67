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
own reconcile); the queue only stops this process's writers from racing each other.
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
from ppml_operator.reconcile import training
from ppml_operator.reconcile.plan import BudgetWrite, Plan

Obj = dict[str, Any]
Decide = Callable[[training.TrainingObserved, datetime], Plan]


@dataclasses.dataclass
class _Pass:
    observed: training.TrainingObserved
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
    observed: training.TrainingObserved,
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
    assert observed.budget is not None
    targets = {(w.budget["metadata"]["namespace"], w.budget["metadata"]["name"])
               for w in plan.budget_writes}
    meta = observed.budget["metadata"]
    key = (meta["namespace"], meta["name"])
    if targets != {key}:  # several budgets: no batching, in the plan's order
        for write in plan.budget_writes:
            write_budget(client, write, logger)
        return dataclasses.replace(plan, budget_writes=[])
    queue = _queue(*key)
    mine = _Pass(observed, plan, decide, now, logger)
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
    first = batch[0]
    # Start from the newest version any pass of the batch has seen (passes observed at
    # different times); a wrong pick costs one 409, never a wrong ledger.
    candidates = [queue.newest_after(item.observed.budget) for item in batch
                  if item.observed.budget is not None]
    unreplaced = [b for b in candidates
                  if str(b["metadata"].get("resourceVersion")) not in queue.successors]
    base = (unreplaced or candidates)[-1]
    current = base
    writes: list[BudgetWrite] = []
    try:
        for item in batch:
            observed = dataclasses.replace(item.observed, budget=current)
            plan = item.decide(observed, item.now())
            for write in plan.budget_writes:
                writes.append(write)
                current = {**current, "status": write.status}
            item.result = dataclasses.replace(plan, budget_writes=[])
        if writes:
            operation = "+".join(sorted({w.operation for w in writes}))
            combined = BudgetWrite(
                base, current["status"], operation, writes[0].job_uid,
                "; ".join(w.message for w in writes),
            )
            queue.stored(base, write_budget(client, combined, first.logger))
    except BaseException as err:  # every pass of the batch shares the outcome
        for item in batch:
            item.error = err
    finally:
        for item in batch:
            item.done.set()
