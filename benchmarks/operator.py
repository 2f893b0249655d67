"""Operator admission throughput and latency against a bare client, side by side, on devcluster.

Usage::

    python benchmarks/operator.py [--jobs 200] [--out benchmarks/results/operator.json]

Two runs in one process, each in its own namespace:

1. **operator**: ``python -m ppml_operator`` watches the namespace; one PrivacyBudget (epsilon
   1000); ``--jobs`` PrivateTrainingJobs are created back to back. Each is priced with the
   accountant, reserved on the budget with a compare-and-swap (all racing for the same
   budget), admitted and given its children (ServiceAccount, ConfigMap, NetworkPolicy, trainer
   Job). Measured: jobs admitted per second (first create to last admission) and the latency from
   each create to the moment the job is seen ``Admitted=True`` (polled every 50 ms).
2. **bare client**: the same child objects, rendered by the same code, created by one client in
   a loop with no operator, no accounting and no ledger. Measured the same way: jobs per second
   and the latency per job (its four creates).

The pods never start (a node selector no node matches), so neither run measures training.
The figure is the ratio operator / bare client.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
NOWHERE = {"ppml.dev/benchmark-node": "none"}


def job_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "ppml.dev/v1alpha1", "kind": "PrivateTrainingJob",
        "metadata": {"name": name},
        "spec": {
            "budgetRef": {"name": "bench"},
            "privacy": {"noiseMultiplier": "4", "delta": "1e-5"},
            "data": {"source": "Builtin", "builtin": {"name": "Digits"}, "numRecords": 1797},
            "model": {"architecture": "LogisticRegression"},
            "training": {"epochs": 1, "batchSize": 64, "learningRate": "0.1"},
            "runtime": {"nodeSelector": NOWHERE},
        },
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(latencies: list[float], span: float, n: int) -> dict[str, float]:
    return {
        "jobs": n,
        "seconds": round(span, 3),
        "jobs_per_second": round(n / span, 2),
        "latency_p50_s": round(percentile(latencies, 0.5), 4),
        "latency_p99_s": round(percentile(latencies, 0.99), 4),
        "latency_mean_s": round(statistics.fmean(latencies), 4),
    }


def make_namespace(cluster: Any, name: str) -> None:
    cluster.kubectl("delete", "namespace", name, "--wait=true", "--timeout=300s")
    result = cluster.kubectl("create", "namespace", name)
    assert result.returncode == 0, result.stderr


def run_operator(cluster: Any, client: Any, ns: str, n: int) -> dict[str, float]:
    make_namespace(cluster, ns)
    client.create({
        "apiVersion": "ppml.dev/v1alpha1", "kind": "PrivacyBudget",
        "metadata": {"name": "bench", "namespace": ns},
        "spec": {"epsilon": "1000", "delta": "1e-5"},
    })
    log = open(REPO / "benchmarks" / "results" / "operator-bench.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "ppml_operator", "--namespace", ns],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 120
        while not ((client.get("PrivacyBudget", ns, "bench") or {}).get("status")):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the operator did not start")
            time.sleep(0.2)
        # Warm the operator's accountant with one job, outside the measurement.
        warm = job_manifest("warm-up")
        warm["metadata"]["namespace"] = ns
        client.create(warm)
        wait_admitted(client, ns, {"warm-up"}, {}, timeout=120)
        created: dict[str, float] = {}
        admitted: dict[str, float] = {}
        names = [f"bench-{i:03d}" for i in range(n)]
        watcher = threading.Thread(
            target=wait_admitted, args=(client, ns, set(names), admitted), daemon=True
        )
        watcher.start()
        for name in names:
            body = job_manifest(name)
            body["metadata"]["namespace"] = ns
            created[name] = time.monotonic()
            client.create(body)
        watcher.join(timeout=600)
        if len(admitted) != n:
            raise RuntimeError(f"only {len(admitted)} of {n} jobs were admitted")
        latencies = [admitted[k] - created[k] for k in names]
        span = max(admitted.values()) - min(created.values())
        return summary(latencies, span, n)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def wait_admitted(
    client: Any, ns: str, names: set[str], seen: dict[str, float], timeout: float = 600
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not names <= set(seen):
        now = time.monotonic()
        for item in client.list("PrivateTrainingJob", ns):
            name = item["metadata"]["name"]
            conds = (item.get("status") or {}).get("conditions") or []
            if name in names and name not in seen and any(
                c["type"] == "Admitted" and c["status"] == "True" for c in conds
            ):
                seen[name] = now
        time.sleep(0.05)


def run_bare(cluster: Any, client: Any, ns: str, n: int) -> dict[str, float]:
    from ppml_operator.api.v1alpha1 import PrivateTrainingJob
    from ppml_operator.render.trainer import Paid, RenderSettings, render_children

    make_namespace(cluster, ns)
    paid = Paid(noise_multiplier="4", sample_rate="0.04453723034098817", steps=23,
                delta="0.00001", epsilon="0.1")
    latencies: list[float] = []
    start = time.monotonic()
    for i in range(n):
        body = job_manifest(f"bench-{i:03d}")
        body["metadata"].update(namespace=ns, uid=f"bare-{i:05d}")
        t0 = time.monotonic()
        for child in render_children(body, PrivateTrainingJob.model_validate(body), paid,
                                     RenderSettings()):
            child["metadata"].pop("ownerReferences")  # no owner exists in this run
            client.create(child)
        latencies.append(time.monotonic() - t0)
    return summary(latencies, time.monotonic() - start, n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "operator.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "devcluster" / "src"))
    from devcluster.cluster import ensure_up
    from ppml_operator import k8s

    (REPO / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    cluster = ensure_up()
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    client = k8s.Client(k8s.load_configuration(str(cluster.kubeconfig)))
    try:
        bare = run_bare(cluster, client, "bench-bare", args.jobs)
        print(f"bare client: {bare}", flush=True)
        operator = run_operator(cluster, client, "bench-operator", args.jobs)
        print(f"operator:    {operator}", flush=True)
    finally:
        for ns in ("bench-bare", "bench-operator"):
            for kind in ("PrivateTrainingJob", "PrivacyBudget"):  # the operator is stopped
                for item in client.list(kind, ns):
                    client.patch(kind, ns, item["metadata"]["name"],
                                 {"metadata": {"finalizers": None}})
            cluster.kubectl("delete", "namespace", ns, "--wait=false")
    result = {
        "benchmark": "operator admission vs a bare client creating the same children",
        "jobs": args.jobs,
        "operator": operator,
        "bare_client": bare,
        "ratio_throughput_operator_over_bare": round(
            operator["jobs_per_second"] / bare["jobs_per_second"], 3),
        "ratio_latency_p50_operator_over_bare": round(
            operator["latency_p50_s"] / bare["latency_p50_s"], 2),
        "ratio_latency_p99_operator_over_bare": round(
            operator["latency_p99_s"] / bare["latency_p99_s"], 2),
        "note": "one budget shared by every job (every admission is a compare-and-swap on it);"
                " pods never start; devcluster on this machine, shared CPU",
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':14}{'jobs/s':>10}{'p50 s':>10}{'p99 s':>10}")
    for label, row in (("operator", operator), ("bare client", bare)):
        print(f"{label:14}{row['jobs_per_second']:>10}{row['latency_p50_s']:>10}"
              f"{row['latency_p99_s']:>10}")
    print(f"ratio (operator / bare): throughput {result['ratio_throughput_operator_over_bare']}, "
          f"p50 latency {result['ratio_latency_p50_operator_over_bare']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
