"""Operator admission throughput and latency against a bare client, side by side, on devcluster.

Usage::

    python benchmarks/admission.py [--jobs 200] [--kind PrivateTrainingJob|FederatedJob|all]
                                   [--out benchmarks/results/admission.json]

(The file was ``benchmarks/operator.py``, which shadowed the standard library's ``operator``
module for any Python started with ``benchmarks/`` on its path.)

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
The figure is the ratio operator / bare client. ``--kind FederatedJob`` does the same with
central-DP federations of three silos: the operator prices, reserves, admits and creates the
key Secret, ConfigMap, NetworkPolicies, Service, SuperLink pod and submitter Job; the bare client
generates the same key material and creates the same objects.
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


def job_manifest(name: str, kind: str = "PrivateTrainingJob") -> dict[str, Any]:
    if kind == "FederatedJob":
        digits = {"source": "Builtin", "builtin": {"name": "Digits"}, "numRecords": 1797}
        return {
            "apiVersion": "ppml.dev/v1alpha1", "kind": "FederatedJob",
            "metadata": {"name": name},
            "spec": {
                "rounds": 2, "budgetRef": {"name": "bench"},
                "clients": [{"name": f"silo-{i}", "data": digits} for i in range(3)],
                "privacy": {"mode": "Central", "noiseMultiplier": "8", "delta": "1e-3"},
                "model": {"architecture": "LogisticRegression"},
                "training": {"batchSize": 32, "learningRate": "0.1"},
                "runtime": {"nodeSelector": NOWHERE},
            },
        }
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


def run_operator(cluster: Any, client: Any, ns: str, n: int, kind: str) -> dict[str, float]:
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
        warm = job_manifest("warm-up", kind)
        warm["metadata"]["namespace"] = ns
        client.create(warm)
        wait_admitted(client, ns, {"warm-up"}, {}, timeout=120, kind=kind)
        created: dict[str, float] = {}
        admitted: dict[str, float] = {}
        names = [f"bench-{i:03d}" for i in range(n)]
        watcher = threading.Thread(
            target=wait_admitted, args=(client, ns, set(names), admitted),
            kwargs={"kind": kind}, daemon=True
        )
        watcher.start()
        for name in names:
            body = job_manifest(name, kind)
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
    client: Any, ns: str, names: set[str], seen: dict[str, float], timeout: float = 600,
    kind: str = "PrivateTrainingJob",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not names <= set(seen):
        now = time.monotonic()
        for item in client.list(kind, ns):
            name = item["metadata"]["name"]
            conds = (item.get("status") or {}).get("conditions") or []
            if name in names and name not in seen and any(
                c["type"] == "Admitted" and c["status"] == "True" for c in conds
            ):
                seen[name] = now
        time.sleep(0.05)


def _bare_children(kind: str) -> Any:
    """Return ``render(body) -> children`` as the operator renders them, minus the ledger."""
    from datetime import UTC, datetime

    from ppml_operator.api.v1alpha1 import FederatedJob, PrivateTrainingJob
    from ppml_operator.reconcile import federated
    from ppml_operator.render import federated as rf
    from ppml_operator.render.common import RenderSettings
    from ppml_operator.render.trainer import Paid, render_children

    if kind == "FederatedJob":
        probe = job_manifest("probe", kind)
        probe["metadata"].update(namespace="ns", uid="probe", generation=1)
        price = federated.price(probe)  # priced once, outside the loop: no accounting per job

        def render_fed(body: dict[str, Any]) -> list[dict[str, Any]]:
            fj = FederatedJob.model_validate(body)
            secret = rf.generate_key_secret(body, fj, datetime.now(UTC))
            return [c for c in rf.render_children(body, fj, price.paid, RenderSettings(), secret)
                    if not (c["kind"] == "Pod" and "supernode" in c["metadata"]["name"])]

        return render_fed
    paid = Paid(noise_multiplier="4", sample_rate="0.04453723034098817", steps=23,
                delta="0.00001", epsilon="0.1")
    return lambda body: render_children(body, PrivateTrainingJob.model_validate(body), paid,
                                        RenderSettings())


def run_bare(cluster: Any, client: Any, ns: str, n: int, kind: str) -> dict[str, float]:
    make_namespace(cluster, ns)
    render = _bare_children(kind)
    latencies: list[float] = []
    start = time.monotonic()
    for i in range(n):
        body = job_manifest(f"bench-{i:03d}", kind)
        body["metadata"].update(namespace=ns, uid=f"bare-{i:05d}", generation=1)
        t0 = time.monotonic()
        for child in render(body):
            child["metadata"].pop("ownerReferences", None)  # no owner exists in this run
            client.create(child)
        latencies.append(time.monotonic() - t0)
    return summary(latencies, time.monotonic() - start, n)


def request_profile(cluster: Any, ns: str, since: str, n: int) -> dict[str, Any]:
    """Count the API requests made in ``ns`` since ``since``, from devcluster's audit log.

    Grouped by writer (kopf's own requests, the operator's client, the controllers), verb and
    resource, with the 409s among them: per job, this is where the operator's time goes.
    """
    import collections

    counts: collections.Counter[str] = collections.Counter()
    conflicts: collections.Counter[str] = collections.Counter()
    for path in sorted(cluster.paths.logs.glob("audit*.log")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            ref = event.get("objectRef") or {}
            if ref.get("namespace") != ns or event.get("requestReceivedTimestamp", "") < since:
                continue
            agent = str(event.get("userAgent", ""))
            who = ("kopf" if agent.startswith("kopf") else
                   "operator client" if agent.startswith("OpenAPI-Generator") else
                   agent.split("/")[0] or "other")
            resource = ref.get("resource", "") + (
                f"/{ref['subresource']}" if ref.get("subresource") else "")
            key = f"{who} {event.get('verb')} {resource}"
            counts[key] += 1
            if (event.get("responseStatus") or {}).get("code") == 409:
                conflicts[key] += 1
    return {
        "per_job": {k: round(v / n, 2) for k, v in counts.most_common()},
        "conflicts_per_job": {k: round(v / n, 2) for k, v in conflicts.most_common()},
    }


def measure(cluster: Any, client: Any, kind: str, n: int) -> dict[str, Any]:
    """Run the bare client, then the operator, for one kind; return both and their ratios."""
    slug = "fed" if kind == "FederatedJob" else "ptj"
    try:
        bare = run_bare(cluster, client, f"bench-{slug}-bare", n, kind)
        print(f"{kind} bare client: {bare}", flush=True)
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        operator = run_operator(cluster, client, f"bench-{slug}-operator", n, kind)
        print(f"{kind} operator:    {operator}", flush=True)
        profile = request_profile(cluster, f"bench-{slug}-operator", since, n + 1)
        print(f"{kind} requests per job: {json.dumps(profile, indent=1)}", flush=True)
    finally:
        for ns in (f"bench-{slug}-bare", f"bench-{slug}-operator"):
            for k in (kind, "PrivacyBudget"):  # the operator is stopped
                for item in client.list(k, ns):
                    client.patch(k, ns, item["metadata"]["name"],
                                 {"metadata": {"finalizers": None}})
            cluster.kubectl("delete", "namespace", ns, "--wait=false")
    return {
        "operator": operator,
        "bare_client": bare,
        "operator_requests": profile,
        "ratio_throughput_operator_over_bare": round(
            operator["jobs_per_second"] / bare["jobs_per_second"], 3),
        "ratio_latency_p50_operator_over_bare": round(
            operator["latency_p50_s"] / bare["latency_p50_s"], 2),
        "ratio_latency_p99_operator_over_bare": round(
            operator["latency_p99_s"] / bare["latency_p99_s"], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--kind", default="all",
                        choices=["PrivateTrainingJob", "FederatedJob", "all"])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "admission.json"))
    args = parser.parse_args()
    from devcluster.cluster import ensure_up  # devcluster/src is on the venv's path (.pth)
    from ppml_operator import k8s

    (REPO / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    cluster = ensure_up()
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    client = k8s.Client(k8s.load_configuration(str(cluster.kubeconfig)))
    kinds = ["PrivateTrainingJob", "FederatedJob"] if args.kind == "all" else [args.kind]
    result: dict[str, Any] = {
        "benchmark": "operator admission vs a bare client creating the same children",
        "jobs": args.jobs,
        "note": "one budget shared by every job (every admission is a compare-and-swap on it);"
                " pods never start; devcluster on this machine, shared CPU",
    }
    for kind in kinds:
        result[kind] = measure(cluster, client, kind, args.jobs)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':34}{'jobs/s':>10}{'p50 s':>10}{'p99 s':>10}")
    for kind in kinds:
        for label in ("operator", "bare_client"):
            row = result[kind][label]
            print(f"{kind + ' ' + label:34}{row['jobs_per_second']:>10}"
                  f"{row['latency_p50_s']:>10}{row['latency_p99_s']:>10}")
        print(f"{kind}: ratio (operator / bare) throughput "
              f"{result[kind]['ratio_throughput_operator_over_bare']}, p99 latency "
              f"{result[kind]['ratio_latency_p99_operator_over_bare']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
