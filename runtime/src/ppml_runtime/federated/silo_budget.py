"""A silo's own count of the local DP-SGD it ran, against what its budget paid.

Under privacy mode Local the operator charges each silo's budget for ``rounds`` rounds of
``steps`` DP-SGD steps in all (``steps_in_round`` of them per round) and configures the silo
with exactly those figures. The server decides how often it asks a silo to train, and the
server is not the party whose records are spent; so the silo counts its own rounds and steps,
and refuses a round that would go beyond what was paid: it raises before it trains, and the
ClientApp replies to the server with an error instead of an update.

The count is written ahead (before the round trains) to a small JSON file beside the silo's
data file, so a ClientApp restarted in the same pod (a warm process that crashed, a container
restart) keeps counting from where it was; a crash during a round counts that round as spent.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_LOCK = threading.Lock()
"""Serialises claims of every silo in this process (a warm process may run tasks in threads)."""


class UnpaidRoundError(RuntimeError):
    """The server asked a silo to train a round its budget did not pay for."""


@dataclass(frozen=True)
class Spent:
    """What a silo has run so far: its own rounds and the DP-SGD steps in them."""

    rounds: int = 0
    steps: int = 0


def steps_in_round(total_steps: int, rounds: int, own_round: int) -> int:
    """Split the paid-for DP-SGD steps over the rounds: earlier rounds take the remainder."""
    base, extra = divmod(total_steps, rounds)
    return base + (1 if own_round <= extra else 0)


def spent_path(data_path: str | Path) -> Path:
    """Return the file that records what the silo whose data is ``data_path`` has run."""
    path = Path(data_path)
    return path.with_name(f"{path.stem}.spent.json")


def read_spent(path: Path) -> Spent:
    """Read the record at ``path`` (nothing run yet when there is none)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Spent()
    return Spent(rounds=int(data["rounds"]), steps=int(data["steps"]))


def claim_round(
    path: Path, *, silo: str, paid_rounds: int, paid_steps: int, server_round: int
) -> int:
    """Count one more local round against what was paid; return its number of steps.

    Parameters
    ----------
    path
        The silo's record (:func:`spent_path`).
    silo
        The silo's name, for the log and the error.
    paid_rounds, paid_steps
        What the silo's budget paid for: the federation's rounds and the silo's total steps.
    server_round
        The round number the server sent (checked too, never trusted alone).

    Returns
    -------
    int
        The DP-SGD steps this round may run, recorded as spent before it returns.

    Raises
    ------
    UnpaidRoundError
        If this round would go beyond the paid rounds or steps; nothing is recorded and the
        silo must not train.

    """
    with _LOCK:
        spent = read_spent(path)
        own_round = spent.rounds + 1
        steps = steps_in_round(paid_steps, paid_rounds, own_round) if own_round <= paid_rounds \
            else 0
        problem = None
        if own_round > paid_rounds:
            problem = f"it has already run all {paid_rounds} rounds its budget paid for"
        elif server_round > paid_rounds:
            problem = f"its budget paid for {paid_rounds} rounds"
        elif spent.steps + steps > paid_steps:
            problem = (f"{spent.steps} of its {paid_steps} paid DP-SGD steps are spent and this "
                       f"round needs {steps}")
        if problem is not None:
            message = (f"silo {silo} refused server round {server_round}: {problem}; "
                       "it did not train")
            logger.error("Refused server round %d of silo %s: %s", server_round, silo, problem)
            raise UnpaidRoundError(message)
        record = {"rounds": own_round, "steps": spent.steps + steps}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
        logger.info("Claimed round %d of %d (%d DP-SGD steps) for silo %s", own_round,
                    paid_rounds, steps, silo)
        return steps
