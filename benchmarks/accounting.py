"""Accounting benchmark: jobs that fit per composition, and admission-check latency.

Part 1 -- how many identical DP-SGD jobs fit in an (epsilon=10, delta=1e-5) budget under Basic,
RDP and PLD composition, counted with ``LedgerAccount`` exactly as the operator admits them
(add charges while ``would_fit`` says yes), beside dp_accounting's own accountants composing
``k`` copies (the reference). Basic is the sound kind: ``k`` jobs each at delta/k, so that the
deltas add up to the budget's (the issue's reference counts 5/17/3 are this rule at 50,000
records). Workloads use 60,000 records (as the issue states) and 50,000 (where the issue's
reference counts reproduce exactly).

Part 2 -- latency of one admission check (``would_fit``) against ledgers of 1, 100 and 1,000
heterogeneous RDP charges, beside recomposing the same ledger from scratch with dp_accounting's
RdpAccountant; part 3 does the same for PLD ledgers (the composed PLD is cached, so a check is
one convolution). Results go to benchmarks/results/accounting.json.

Run: ``.venv/bin/python benchmarks/accounting.py [--quick]`` (``--quick`` skips the PLD ledger
counts, the 1,000-charge RDP recomposition baseline and the 1,000-charge PLD ledger).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import time
from decimal import Decimal
from pathlib import Path

import dp_accounting
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from ppml_operator.privacy import DpSgdEvent, LedgerAccount, epsilon_of
from ppml_operator.privacy._dp import to_dp_event
from ppml_operator.privacy.decimals import round_down

BUDGET_EPSILON = Decimal(10)
BUDGET_DELTA = Decimal("1e-5")
WORKLOADS = [("1.0", 256, 10), ("2.0", 256, 10), ("1.54", 1024, 30)]
REFERENCE = {"Basic": [5, 17, 3], "RDP": [39, 244, 10], "PLD": [44, 268, 12]}
RESULTS = Path(__file__).resolve().parent / "results" / "accounting.json"


def workload_event(noise: str, batch: int, epochs: int, records: int) -> DpSgdEvent:
    steps = epochs * records // batch
    return DpSgdEvent(Decimal(noise), Decimal(batch) / Decimal(records), steps)


def ledger_count(event: DpSgdEvent, composition: str) -> int:
    ledger = LedgerAccount(composition, BUDGET_DELTA)
    while ledger.would_fit([event], BUDGET_EPSILON).fits:
        ledger.add([event])
    return len(ledger)


def basic_count(event: DpSgdEvent) -> int:
    """Largest k such that k charges, each at delta/k, fit under Basic composition."""
    k = 1
    while True:
        # Round the share down so that k + 1 shares never add up to more than the budget's delta.
        delta = round_down(BUDGET_DELTA / (k + 1))
        ledger = LedgerAccount("Basic", BUDGET_DELTA)
        if (k + 1) * epsilon_of([event], delta) > BUDGET_EPSILON:
            break
        for _ in range(k):
            ledger.add([event], delta=delta)
        if not ledger.would_fit([event], BUDGET_EPSILON, delta=delta).fits:
            break
        k += 1
    return k


def reference_count(event: DpSgdEvent, accountant: type) -> int:
    """dp_accounting composing k copies of the job (binary search on k)."""
    dp = to_dp_event(event)

    def fits(k: int) -> bool:
        acc = accountant()
        acc.compose(dp_accounting.SelfComposedDpEvent(dp, k))
        return acc.get_epsilon(float(BUDGET_DELTA)) <= float(BUDGET_EPSILON)

    low, high = 0, 1
    while fits(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def part_one(quick: bool) -> list[dict[str, object]]:
    rows = []
    for records in (60_000, 50_000):
        for index, (noise, batch, epochs) in enumerate(WORKLOADS):
            event = workload_event(noise, batch, epochs, records)
            row: dict[str, object] = {
                "records": records,
                "noiseMultiplier": noise,
                "batch": batch,
                "epochs": epochs,
                "steps": event.steps,
                "jobEpsilon": str(epsilon_of([event], BUDGET_DELTA)),
            }
            started = time.perf_counter()
            row["basic"] = basic_count(event)
            row["rdp"] = ledger_count(event, "RDP")
            row["pld"] = None if quick else ledger_count(event, "PLD")
            row["ledgerSeconds"] = round(time.perf_counter() - started, 2)
            row["dpAccountingRdp"] = reference_count(event, RdpAccountant)
            row["dpAccountingPld"] = reference_count(event, PLDAccountant)
            row["issueReference"] = {k: v[index] for k, v in REFERENCE.items()}
            rows.append(row)
            print_row(row)
    return rows


def print_row(row: dict[str, object]) -> None:
    basic = row["basic"]
    rdp, pld = row["rdp"], row["pld"]
    assert isinstance(basic, int) and isinstance(rdp, int)
    ratio_rdp = rdp / basic
    pld_text = "-" if pld is None else str(pld)
    ratio_pld = "-" if pld is None else f"{pld / basic:.1f}x"  # type: ignore[operator]
    ref = row["issueReference"]
    print(
        f"{row['records']:>6} {row['noiseMultiplier']:>5} {row['batch']:>5} {row['epochs']:>3} "
        f"{row['steps']:>5} {row['jobEpsilon']:>9} | basic {basic:>3}  rdp {rdp:>4} "
        f"({ratio_rdp:.1f}x)  pld {pld_text:>4} ({ratio_pld}) | dp_accounting rdp "
        f"{row['dpAccountingRdp']:>4} pld {row['dpAccountingPld']:>4} | issue {ref}",
        flush=True,
    )


def heterogeneous_events(count: int, seed: int = 7) -> list[DpSgdEvent]:
    rng = random.Random(seed)
    pool = [
        DpSgdEvent(Decimal(noise), Decimal(rate), steps)
        for noise in ("2.5", "3", "4", "6", "8")
        for rate in ("0.0005", "0.001", "0.002", "0.004")
        for steps in (50, 100, 200)
    ]
    return [rng.choice(pool) for _ in range(count)]


def timed(function, repeat: int) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def part_two(quick: bool) -> list[dict[str, object]]:
    rows = []
    candidate_pool = [DpSgdEvent(Decimal("1.1"), Decimal("0.004"), s) for s in range(2000, 2100)]
    for size in (1, 100, 1000):
        events = heterogeneous_events(size)
        ledger = LedgerAccount("RDP", BUDGET_DELTA)
        for i, event in enumerate(events):
            ledger.add([event], key=f"job-{i}")
        warm_candidate = candidate_pool[0]
        ledger.would_fit([warm_candidate], BUDGET_EPSILON)  # caches its curve
        warm = timed(lambda lg=ledger, c=warm_candidate: lg.would_fit([c], BUDGET_EPSILON), 20)
        fresh = iter(candidate_pool[1 + size % 7 * 10 :])
        cold = timed(lambda lg=ledger, it=fresh: lg.would_fit([next(it)], BUDGET_EPSILON), 3)
        row: dict[str, object] = {
            "charges": size,
            "checkWarmMs": warm * 1e3,
            "checkColdMs": cold * 1e3,
        }
        if size < 1000 or not quick:

            def recompose(evs: list[DpSgdEvent] = events, new: DpSgdEvent = warm_candidate) -> None:
                acc = RdpAccountant()
                for e in [*evs, new]:
                    acc.compose(to_dp_event(e))
                acc.get_epsilon(float(BUDGET_DELTA))

            row["recomposeMs"] = timed(recompose, 1) * 1e3
        else:
            row["recomposeMs"] = None
        recompose_ms = row["recomposeMs"]
        ratio = "-" if recompose_ms is None else f"{recompose_ms / (warm * 1e3):,.0f}x"  # type: ignore[operator]
        recompose_text = "-" if recompose_ms is None else f"{recompose_ms:,.0f} ms"
        print(
            f"{size:>5} charges | would_fit {warm * 1e3:7.2f} ms (new job's curve cached), "
            f"{cold * 1e3:7.1f} ms (curve computed) | dp_accounting recompose "
            f"{recompose_text:>12} | ratio {ratio}",
            flush=True,
        )
        rows.append(row)
    return rows


def part_three(quick: bool) -> list[dict[str, object]]:
    """PLD ledgers: one check is one convolution with the cached composed PLD."""
    rows = []
    candidate = DpSgdEvent(Decimal("3"), Decimal("0.004"), 500)
    for size in (1, 100) if quick else (1, 100, 1000):
        events = heterogeneous_events(size)
        started = time.perf_counter()
        ledger = LedgerAccount("PLD", BUDGET_DELTA)
        for i, event in enumerate(events):
            ledger.add([event], key=f"job-{i}")
        built = time.perf_counter() - started
        ledger.would_fit([candidate], BUDGET_EPSILON)  # caches the candidate's PLD
        check = timed(lambda lg=ledger: lg.would_fit([candidate], BUDGET_EPSILON), 5)

        def recompose(evs: list[DpSgdEvent] = events) -> None:
            acc = PLDAccountant()
            for e in [*evs, candidate]:
                acc.compose(to_dp_event(e))
            acc.get_epsilon(float(BUDGET_DELTA))

        scratch = timed(recompose, 1)
        row: dict[str, object] = {
            "charges": size,
            "checkMs": check * 1e3,
            "recomposeMs": scratch * 1e3,
            "buildSeconds": built,
        }
        print(
            f"{size:>5} charges | would_fit {check * 1e3:9.1f} ms | dp_accounting recompose "
            f"{scratch * 1e3:>12,.0f} ms | ratio {scratch / check:,.0f}x",
            flush=True,
        )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the slowest measurements")
    args = parser.parse_args()
    logging.getLogger("absl").setLevel(logging.ERROR)
    print("Jobs that fit in (epsilon=10, delta=1e-5), identical DP-SGD jobs")
    print(
        "records noise batch ep steps  job eps | LedgerAccount (ratio over basic) | "
        "dp_accounting k copies | issue's reference"
    )
    fit_rows = part_one(args.quick)
    print("\nAdmission-check latency, RDP ledger of heterogeneous charges")
    latency_rows = part_two(args.quick)
    print("\nAdmission-check latency, PLD ledger of the same charges")
    pld_rows = part_three(args.quick)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "budget": {"epsilon": str(BUDGET_EPSILON), "delta": str(BUDGET_DELTA)},
                "jobsThatFit": fit_rows,
                "admissionLatency": latency_rows,
                "pldAdmissionLatency": pld_rows,
                "quick": args.quick,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nWrote {RESULTS}")


if __name__ == "__main__":
    main()
