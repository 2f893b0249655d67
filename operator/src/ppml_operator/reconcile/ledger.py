"""Pure ledger operations on a PrivacyBudget's status: reserve, commit, release, fold.

Each operation takes the budget object as last read from the API server (a plain dict) and
returns an :class:`Outcome`: the new ``status`` to write with a compare-and-swap, or ``None``
when nothing is to be written. Nothing here reads a clock, a cache or the network; the caller
(:mod:`ppml_operator.handlers.ledger`) does the GET, calls one of these, and PUTs the result with
the resourceVersion it read, retrying from a fresh GET on 409.

Invariants (see ``docs/ledger.md``):

- idempotent by job UID: a charge already present is never added again;
- spent never decreases: ``Committed`` is final, only ``Reserved`` can become ``Released``;
- totals are a function of the multiset of events, so folding old committed charges into
  ``status.folded`` changes no total (identical events are merged before composing, in a
  canonical order, whether they are folded or not);
- under ``Basic`` composition a charge fits only if both the sum of the epsilons and the sum
  of the deltas (each charge's own, ``status.charges[].delta``) stay within the budget, exactly
  as :class:`ppml_operator.privacy.LedgerAccount` (and ``ppml budget plan``) decide; a charge
  recorded without a delta counts the budget's whole delta. ``PLD`` budgets compose with RDP
  here, a sound upper bound.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from ppml_operator.api.v1alpha1.common import DECIMAL_MAX_LENGTH
from ppml_operator.privacy.decimals import (
    format_cost,
    format_decimal,
    format_fitting,
    format_remaining,
    remaining,
    round_up,
)
from ppml_operator.privacy.errors import InvalidPrivacyParameterError
from ppml_operator.privacy.events import (
    COUNT_FIELDS,
    PrivacyEvent,
    event_from_dict,
    event_to_dict,
)
from ppml_operator.privacy.ledger import Composition, LedgerAccount
from ppml_operator.privacy.rdp import RdpCurve

Obj = dict[str, Any]

RESERVED = "Reserved"
COMMITTED = "Committed"
RELEASED = "Released"

DEFAULT_KEEP_COMMITTED = 50
"""Committed charges kept itemised in ``status.charges``; older ones are folded."""

_COUNT_FIELD = COUNT_FIELDS
"""The self-composition count of each serialised event type (``count`` otherwise)."""


class Result(StrEnum):
    """What a ledger operation found or did."""

    RESERVED = "Reserved"
    """The charge was added (or a released one reserved again)."""
    ALREADY_RESERVED = "AlreadyReserved"
    """The job holds a reservation already: nothing to write."""
    ALREADY_COMMITTED = "AlreadyCommitted"
    """The job's charge is spent already: nothing to write, never charge again."""
    EXHAUSTED = "Exhausted"
    """The budget cannot pay now; it might once reservations are released."""
    NEVER_FITS = "NeverFits"
    """The charge exceeds what the budget can ever pay (its total minus what is spent)."""
    COMMITTED = "Committed"
    """A reservation was committed."""
    RELEASED = "Released"
    """A reservation was released."""
    ALREADY_RELEASED = "AlreadyReleased"
    """The charge was released before: nothing to write."""
    NOT_FOUND = "NotFound"
    """The budget holds no charge for the job."""


@dataclass(frozen=True)
class ChargeRequest:
    """What a job asks a budget to reserve.

    Attributes
    ----------
    job_uid, job_kind, job_name, job_namespace
        The job's identity; ``job_uid`` keys the ledger.
    events
        The serialised privacy events (``event_to_dict`` form) covering every attempt.
    epsilon
        The charge's standalone epsilon at ``delta`` (a decimal string).
    attempts
        How many attempts of the job the events cover.
    delta
        The job's delta (a decimal string), the delta the charge spends under ``Basic``
        composition; the budget's delta when not given.

    """

    job_uid: str
    job_kind: str
    job_name: str
    job_namespace: str
    events: tuple[Obj, ...]
    epsilon: str
    attempts: int = 1
    delta: str | None = None


@dataclass(frozen=True)
class Totals:
    """Composed totals of a budget at its delta."""

    spent: Decimal
    reserved: Decimal
    remaining: Decimal
    budget: Decimal

    def status_fields(self) -> Obj:
        """Return the ``spentEpsilon`` / ``reservedEpsilon`` / ``remainingEpsilon`` strings."""
        return {
            "spentEpsilon": format_cost(self.spent),
            "reservedEpsilon": format_cost(self.reserved),
            "remainingEpsilon": format_remaining(self.remaining),
        }


@dataclass(frozen=True)
class Outcome:
    """The result of a ledger operation.

    Attributes
    ----------
    result
        What was found or done.
    status
        The new budget status to compare-and-swap, or None when nothing is to be written.
    message
        A sentence for a condition or an event.
    remaining
        The remaining epsilon before the operation (for messages).
    needed
        The charge's standalone epsilon (reserve only).

    """

    result: Result
    status: Obj | None
    message: str
    remaining: Decimal = Decimal(0)
    needed: Decimal = Decimal(0)


# ---------------------------------------------------------------------------------------------
# Composition
# ---------------------------------------------------------------------------------------------


def _event_key(data: Obj) -> tuple[tuple[str, Any], ...]:
    count_field = _COUNT_FIELD.get(str(data.get("type")), "count")
    return tuple(sorted((k, v) for k, v in data.items() if k != count_field))


def merge_events(events: Iterable[Obj]) -> list[Obj]:
    """Merge identical events into one each, adding their self-composition counts.

    ``DpSgd(z, q, 100)`` twice is ``DpSgd(z, q, 200)`` under every composition we offer, so a
    ledger of many similar jobs composes as a handful of events. The result is sorted
    canonically, so the same multiset of events always composes to the same float.

    Parameters
    ----------
    events
        Serialised events.

    Returns
    -------
    list of dict
        The merged events, in canonical order.

    """
    merged: dict[tuple[tuple[str, Any], ...], Obj] = {}
    for data in events:
        count_field = _COUNT_FIELD.get(str(data.get("type")), "count")
        key = _event_key(data)
        if key in merged:
            merged[key][count_field] = int(merged[key][count_field]) + int(data[count_field])
        else:
            merged[key] = dict(data)
    return [merged[key] for key in sorted(merged, key=repr)]


def _rdp_epsilon(events: Sequence[Obj], delta: Decimal) -> Decimal:
    if not events:
        return Decimal(0)
    curve = RdpCurve.zero()
    for data in merge_events(events):
        # The curve of one step, cached, times the count: a ledger of jobs that differ only in
        # their step counts composes without recomputing any RDP value.
        count_field = _COUNT_FIELD.get(str(data.get("type")), "count")
        unit = event_from_dict({**data, count_field: 1})
        curve = curve + RdpCurve.from_event(unit).scaled(int(data[count_field]))
    return curve.epsilon(delta)


def _spec(budget: Obj) -> tuple[Decimal, Decimal, str]:
    spec = budget.get("spec", {})
    return Decimal(spec["epsilon"]), Decimal(spec["delta"]), str(spec.get("composition", "RDP"))


def _charges(status: Obj) -> list[Obj]:
    charges: list[Obj] = status.get("charges") or []
    return charges


def _compose(
    budget: Obj, status: Obj, *, states: frozenset[str], extra: Sequence[Obj] = ()
) -> Decimal:
    """Compose the folded aggregate, the charges in ``states`` and ``extra`` (RDP, PLD) at delta."""
    _, delta, composition = _spec(budget)
    folded = status.get("folded") or {}
    charges = [c for c in _charges(status) if c.get("state") in states]
    if composition == "Basic":
        total = Decimal(folded.get("basicEpsilon") or 0) if COMMITTED in states else Decimal(0)
        total += sum((Decimal(c["epsilon"]) for c in charges), Decimal(0))
        return total
    events: list[Obj] = []
    if COMMITTED in states:
        events.extend(folded.get("events") or [])
    for charge in charges:
        events.extend(charge.get("events") or [])
    events.extend(extra)
    # PLD budgets compose with RDP here, which upper-bounds PLD: never an underestimate.
    return _rdp_epsilon(events, delta)


_SPENT = frozenset({COMMITTED})
_LIVE = frozenset({COMMITTED, RESERVED})


def _charge_delta(charge: Obj, budget_delta: Decimal) -> Decimal:
    """Return a charge's delta; one recorded without (an older object) spends the whole budget's."""
    value = charge.get("delta")
    return Decimal(str(value)) if value else budget_delta


def _folded_delta(folded: Obj, budget_delta: Decimal) -> Decimal:
    """Return the folded charges' delta sum; folded without one, they spend the whole delta."""
    value = folded.get("basicDelta")
    if value:
        return Decimal(str(value))
    return budget_delta if int(folded.get("count") or 0) else Decimal(0)


def _basic_account(budget: Obj, status: Obj, *, states: frozenset[str]) -> LedgerAccount:
    """Return the Basic ledger of the folded aggregate and the charges in ``states``."""
    _, delta, _ = _spec(budget)
    account = LedgerAccount(Composition.BASIC, delta)
    folded = status.get("folded") or {}
    if COMMITTED in states and int(folded.get("count") or 0):
        account.add_basic(
            folded.get("basicEpsilon") or "0", _folded_delta(folded, delta), key="folded"
        )
    for index, charge in enumerate(_charges(status)):
        if charge.get("state") in states:
            account.add_basic(
                charge["epsilon"], _charge_delta(charge, delta), key=f"charge-{index}"
            )
    return account


def totals(budget: Obj, status: Obj | None = None) -> Totals:
    """Compose a budget's spent, reserved and remaining epsilon.

    Parameters
    ----------
    budget
        The PrivacyBudget object (its ``spec`` gives epsilon, delta and composition).
    status
        The status to total; ``budget["status"]`` when not given.

    Returns
    -------
    Totals
        Spent (committed and folded), reserved (what reservations add on top of spent when
        composed with it) and remaining (never below zero).

    """
    status = budget.get("status") or {} if status is None else status
    epsilon, _, _ = _spec(budget)
    spent = _compose(budget, status, states=_SPENT)
    live = _compose(budget, status, states=_LIVE)
    return Totals(
        spent=spent,
        reserved=max(live - spent, Decimal(0)),
        remaining=remaining(epsilon, live),
        budget=epsilon,
    )


def basic_delta_left(budget: Obj, status: Obj | None = None) -> Decimal | None:
    """Return the delta a ``Basic`` budget has left (never below zero), None for RDP and PLD.

    Parameters
    ----------
    budget
        The PrivacyBudget object.
    status
        The status to total; ``budget["status"]`` when not given.

    Returns
    -------
    Decimal or None
        ``spec.delta`` minus the deltas of the reserved, committed and folded charges.

    """
    status = budget.get("status") or {} if status is None else status
    _, delta, composition = _spec(budget)
    if composition != "Basic":
        return None
    spent = _basic_account(budget, status, states=_LIVE).spent_delta()
    return max(delta - spent, Decimal(0))


# ---------------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------------


def find_charge(budget: Obj, job_uid: str) -> Obj | None:
    """Return the budget's charge for a job UID, or None."""
    for charge in _charges(budget.get("status") or {}):
        if charge.get("jobUID") == job_uid:
            return charge
    return None


def _with_totals(budget: Obj, status: Obj) -> Obj:
    status.update(totals(budget, status).status_fields())
    return status


def _describe(budget: Obj) -> str:
    meta = budget.get("metadata", {})
    return str(meta.get("name", "?"))


def reserve(budget: Obj, request: ChargeRequest, *, now: str) -> Outcome:
    """Reserve a job's charge on a budget, if it fits; idempotent by job UID.

    Parameters
    ----------
    budget
        The PrivacyBudget as last read.
    request
        The charge to reserve.
    now
        The RFC 3339 timestamp to record.

    Returns
    -------
    Outcome
        ``RESERVED`` with the new status; ``ALREADY_RESERVED`` / ``ALREADY_COMMITTED`` with no
        status; ``EXHAUSTED`` (might fit later) or ``NEVER_FITS`` (cannot fit even if every
        reservation were released) with no status and a message naming the figures.

    """
    epsilon, delta, composition = _spec(budget)
    status = copy.deepcopy(budget.get("status") or {})
    existing = find_charge(budget, request.job_uid)
    if existing is not None and existing.get("state") == RESERVED:
        return Outcome(Result.ALREADY_RESERVED, None, "The charge is reserved already.")
    if existing is not None and existing.get("state") == COMMITTED:
        return Outcome(Result.ALREADY_COMMITTED, None, "The charge is committed already.")
    needed = Decimal(request.epsilon)
    charge_delta = Decimal(request.delta) if request.delta is not None else delta
    live = _compose(budget, status, states=_LIVE)
    left = remaining(epsilon, live)
    name = _describe(budget)
    if composition == "Basic":
        blocked = _basic_blocked(budget, status, needed, charge_delta, left=left)
        if blocked is not None:
            return blocked
    elif _compose(budget, status, states=_LIVE, extra=request.events) > epsilon:
        after_spent = _compose(budget, status, states=_SPENT, extra=request.events)
        spent_left = remaining(epsilon, _compose(budget, status, states=_SPENT))
        if after_spent > epsilon:
            return Outcome(
                Result.NEVER_FITS,
                None,
                f"budget {name} has epsilon {format_remaining(spent_left)} left unspent of "
                f"{format_cost(epsilon)} at delta {delta}; this job needs "
                f"{format_cost(needed)}, so it can never be admitted",
                remaining=left,
                needed=needed,
            )
        return Outcome(
            Result.EXHAUSTED,
            None,
            f"budget {name} has epsilon {format_remaining(left)} left at delta {delta}; "
            f"this job needs {format_cost(needed)}",
            remaining=left,
            needed=needed,
        )
    entry: Obj = {
        "jobUID": request.job_uid,
        "jobKind": request.job_kind,
        "jobName": request.job_name,
        "jobNamespace": request.job_namespace,
        "state": RESERVED,
        "events": [dict(e) for e in request.events],
        "epsilon": request.epsilon,
        "delta": format_fitting(charge_delta, DECIMAL_MAX_LENGTH),
        "attempts": request.attempts,
        "reservedAt": now,
    }
    charges = [c for c in _charges(status) if c.get("jobUID") != request.job_uid]
    charges.append(entry)
    status["charges"] = charges
    return Outcome(
        Result.RESERVED,
        _with_totals(budget, status),
        f"Reserved epsilon {format_cost(needed)} on budget {name} for "
        f"{request.job_kind} {request.job_name}",
        remaining=left,
        needed=needed,
    )


def _basic_blocked(
    budget: Obj, status: Obj, needed: Decimal, charge_delta: Decimal, *, left: Decimal
) -> Outcome | None:
    """Decide a Basic reservation: None if it fits, else ``EXHAUSTED`` or ``NEVER_FITS``.

    The charge fits when, with it, both the epsilon sum and the delta sum of the live charges
    (reserved, committed and folded) stay within the budget; it can never fit when the
    committed charges alone leave no room for it.
    """
    epsilon, delta, _ = _spec(budget)
    name = _describe(budget)
    verdicts: list[tuple[bool, bool, Decimal]] = []
    for states in (_LIVE, _SPENT):
        account = _basic_account(budget, status, states=states)
        spent_delta = account.spent_delta()
        account.add_basic(needed, charge_delta, key="candidate")
        verdicts.append(
            (account.spent_epsilon() <= epsilon, account.spent_delta() <= delta, spent_delta)
        )
    (live_eps, live_delta, live_spent_delta), (spent_eps, spent_delta_ok, committed_delta) = (
        verdicts
    )
    if live_eps and live_delta:
        return None
    never = not (spent_eps and spent_delta_ok)
    eps_hit = not spent_eps if never else not live_eps
    if eps_hit:
        if never:
            spent_left = remaining(epsilon, _compose(budget, status, states=_SPENT))
            message = (
                f"budget {name} has epsilon {format_remaining(spent_left)} left unspent of "
                f"{format_cost(epsilon)} at delta {delta}; this job needs "
                f"{format_cost(needed)}, so it can never be admitted"
            )
        else:
            message = (
                f"budget {name} has epsilon {format_remaining(left)} left at delta {delta}; "
                f"this job needs {format_cost(needed)}"
            )
    else:
        used = committed_delta if never else live_spent_delta
        delta_left = format_remaining(max(delta - used, Decimal(0)))
        message = (
            f"budget {name} has delta {delta_left} left{' unspent' if never else ''} of "
            f"{format_decimal(delta)} under Basic composition; this job needs "
            f"{format_decimal(charge_delta)}"
            + (", so it can never be admitted" if never else "")
        )
    return Outcome(
        Result.NEVER_FITS if never else Result.EXHAUSTED,
        None,
        message,
        remaining=left,
        needed=needed,
    )


def commit(
    budget: Obj, job_uid: str, *, now: str, keep: int = DEFAULT_KEEP_COMMITTED
) -> Outcome:
    """Commit a job's reservation: its epsilon is spent for good; folds old charges.

    Returns
    -------
    Outcome
        ``COMMITTED`` with the new status, ``ALREADY_COMMITTED`` or ``NOT_FOUND`` without one.
        A ``Released`` charge is never committed (``ALREADY_RELEASED``): release happens only
        when no pod ever started, so there is nothing to spend.

    """
    settled = _settle(budget, job_uid, COMMITTED, now, released_says="The charge was released.")
    if isinstance(settled, Outcome):
        return settled
    existing, status = settled
    status = fold(budget, status, keep=keep)
    return Outcome(
        Result.COMMITTED,
        _with_totals(budget, status),
        f"Committed epsilon {existing.get('epsilon')} on budget {_describe(budget)} for "
        f"{existing.get('jobKind')} {existing.get('jobName')}",
    )


def _settle(
    budget: Obj, job_uid: str, state: str, now: str, *, released_says: str
) -> Outcome | tuple[Obj, Obj]:
    """Move a Reserved charge to ``state`` (Committed or Released) in a copy of the status.

    Returns the no-op ``Outcome`` when there is nothing to settle (no charge, or already
    Committed or Released), else the charge as it was and the new status.
    """
    existing = find_charge(budget, job_uid)
    if existing is None:
        return Outcome(Result.NOT_FOUND, None, "The budget holds no charge for the job.")
    if existing.get("state") == COMMITTED:
        return Outcome(Result.ALREADY_COMMITTED, None, "The charge is committed already.")
    if existing.get("state") == RELEASED:
        return Outcome(Result.ALREADY_RELEASED, None, released_says)
    status = copy.deepcopy(budget["status"])
    stamp = "committedAt" if state == COMMITTED else "releasedAt"
    for charge in _charges(status):
        if charge.get("jobUID") == job_uid:
            charge["state"] = state
            charge[stamp] = now
    return existing, status


def release(budget: Obj, job_uid: str, *, now: str) -> Outcome:
    """Release a reservation; only ever called when no pod of the job ever started.

    Returns
    -------
    Outcome
        ``RELEASED`` with the new status; ``ALREADY_RELEASED``, ``NOT_FOUND`` or
        ``ALREADY_COMMITTED`` (a committed charge is never released) without one.

    """
    settled = _settle(
        budget, job_uid, RELEASED, now, released_says="The charge was released already."
    )
    if isinstance(settled, Outcome):
        return settled
    existing, status = settled
    return Outcome(
        Result.RELEASED,
        _with_totals(budget, status),
        f"Released epsilon {existing.get('epsilon')} on budget {_describe(budget)} for "
        f"{existing.get('jobKind')} {existing.get('jobName')}",
    )


def fold(budget: Obj, status: Obj, *, keep: int = DEFAULT_KEEP_COMMITTED) -> Obj:
    """Fold committed charges beyond the newest ``keep`` into ``status.folded``.

    Released charges older than the newest ``keep`` released ones are dropped (they spend
    nothing). Totals are unchanged by construction (see :func:`merge_events`).

    Parameters
    ----------
    budget
        The PrivacyBudget (for its composition and delta).
    status
        The status to fold (not modified).
    keep
        How many committed (and released) charges to keep itemised.

    Returns
    -------
    dict
        The folded status.

    """
    status = copy.deepcopy(status)
    charges = _charges(status)
    committed = sorted(
        (c for c in charges if c.get("state") == COMMITTED),
        key=lambda c: (str(c.get("committedAt") or ""), str(c.get("jobUID"))),
    )
    released = sorted(
        (c for c in charges if c.get("state") == RELEASED),
        key=lambda c: (str(c.get("releasedAt") or ""), str(c.get("jobUID"))),
    )
    to_fold = committed[: max(len(committed) - keep, 0)]
    to_drop = released[: max(len(released) - keep, 0)]
    if not to_fold and not to_drop:
        return status
    gone = {id(c) for c in to_fold} | {id(c) for c in to_drop}
    status["charges"] = [c for c in charges if id(c) not in gone]
    if to_fold:
        _, delta, _ = _spec(budget)
        folded = dict(status.get("folded") or {})
        events = list(folded.get("events") or [])
        for charge in to_fold:
            events.extend(charge.get("events") or [])
        merged = merge_events(events)
        basic = Decimal(folded.get("basicEpsilon") or 0) + sum(
            (Decimal(c["epsilon"]) for c in to_fold), Decimal(0)
        )
        basic_delta = _folded_delta(folded, delta) + sum(
            (_charge_delta(c, delta) for c in to_fold), Decimal(0)
        )
        folded["count"] = int(folded.get("count") or 0) + len(to_fold)
        folded["events"] = merged
        folded["basicEpsilon"] = str(basic)
        folded["basicDelta"] = _format_delta_sum(basic_delta)
        folded["epsilon"] = format_cost(_rdp_epsilon(merged, delta)) if merged else "0"
        status["folded"] = folded
    return status


_FOLDED_MAX_LENGTH = 64
"""The longest decimal ``status.folded`` accepts (its fields' maxLength in the CRD)."""


def _format_delta_sum(value: Decimal) -> str:
    """Write a sum of deltas exactly when it fits ``status.folded``, else rounded up.

    Deltas of very different scales (``1e-5 + 1e-70``) sum to more digits than the field
    holds; rounding the spent delta up keeps the ledger conservative and writable.
    """
    try:
        return format_fitting(value, _FOLDED_MAX_LENGTH)
    except InvalidPrivacyParameterError:
        return format_fitting(round_up(value), _FOLDED_MAX_LENGTH)


def canonical_events(events: Iterable[PrivacyEvent]) -> tuple[Obj, ...]:
    """Serialise events for a :class:`ChargeRequest`."""
    return tuple(event_to_dict(e) for e in events)


def repeat_events(events: Sequence[Obj], attempts: int) -> tuple[Obj, ...]:
    """Return events covering ``attempts`` runs of the same job (each count multiplied)."""
    out: list[Obj] = []
    for data in events:
        count_field = _COUNT_FIELD.get(str(data.get("type")), "count")
        scaled = dict(data)
        scaled[count_field] = int(data.get(count_field, 1)) * attempts
        out.append(scaled)
    return tuple(out)


__all__ = [
    "COMMITTED",
    "RELEASED",
    "RESERVED",
    "ChargeRequest",
    "Outcome",
    "Result",
    "Totals",
    "basic_delta_left",
    "canonical_events",
    "commit",
    "find_charge",
    "fold",
    "merge_events",
    "release",
    "repeat_events",
    "reserve",
    "totals",
]
