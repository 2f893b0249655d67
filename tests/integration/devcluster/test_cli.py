"""``python -m devcluster`` subcommands against the running cluster, and ``kubectl logs``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

from dc_helpers import Kube, pod_manifest, wait_for

from devcluster import controlplane
from devcluster.cluster import Cluster


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devcluster", *args], capture_output=True,
                          text=True, timeout=120)


def test_up_on_a_running_cluster_is_a_quick_no_op(devcluster: Cluster) -> None:
    pids = devcluster.paths.run
    before = {p.name: p.read_text() for p in pids.glob("*.pid")}
    t0 = time.monotonic()
    out = _cli("up")
    assert out.returncode == 0, out.stderr
    assert "already up" in out.stdout
    assert time.monotonic() - t0 < 10
    assert {p.name: p.read_text() for p in pids.glob("*.pid")} == before


def test_status_reports_every_component_and_the_node(devcluster: Cluster) -> None:
    out = _cli("status")
    assert out.returncode == 0, out.stderr
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                 "node-agent"):
        assert any(ln.startswith(name) and "running" in ln for ln in out.stdout.splitlines())
    assert "Ready" in out.stdout


def test_env_points_kubectl_at_the_cluster(devcluster: Cluster) -> None:
    out = _cli("env")
    assert out.returncode == 0
    line = out.stdout.strip()
    assert line.startswith(f"export KUBECONFIG={devcluster.kubeconfig} PATH={devcluster.bin_dir}:")
    shell = subprocess.run(["bash", "-c", f"{line}; kubectl get nodes -o name; helm version"],
                           capture_output=True, text=True, timeout=60)
    assert shell.returncode == 0, shell.stderr
    assert "node/devcluster-node" in shell.stdout


def test_logs_lists_and_prints_pod_and_component_logs(kube: Kube, devcluster: Cluster) -> None:
    kube.create("pods", pod_manifest("talker", "print('line one'); print('line two')"))
    kube.wait_phase("talker")
    listing = _cli("logs")
    assert f"{kube.ns}_talker_main" in listing.stdout
    assert "kube-apiserver" in listing.stdout
    pod_log = _cli("logs", f"{kube.ns}/talker")
    assert pod_log.stdout.splitlines() == ["line one", "line two"]
    assert _cli("logs", "kube-apiserver", "--tail", "3").returncode == 0
    assert _cli("logs", "no-such-pod").returncode == 1
    out = devcluster.kubectl("logs", "-n", kube.ns, "talker", "--tail=1", check=True)
    assert out.stdout == "line two\n"


def test_kubectl_logs_follow_streams_until_the_container_exits(
    kube: Kube, devcluster: Cluster
) -> None:
    code = "import time\nfor i in range(3):\n    print('tick', i); time.sleep(0.5)"
    kube.create("pods", pod_manifest("ticker", code))
    kube.wait_phase("ticker", ("Running", "Succeeded"))
    out = devcluster.kubectl("logs", "-f", "-n", kube.ns, "ticker", timeout=30, check=True)
    assert out.stdout.splitlines() == ["tick 0", "tick 1", "tick 2"]


def test_fake_gpus_change_the_node_capacity_and_gate_scheduling(
    kube: Kube, devcluster: Cluster
) -> None:
    def gpu_pod(name: str) -> dict[str, object]:
        return pod_manifest(name, "pass", container={
            "resources": {"limits": {"nvidia.com/gpu": "1"}}})

    if shutil.which("nvidia-smi"):
        # Real GPUs: the node advertises what nvidia-smi lists, and a GPU pod runs.
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
        real = sum(1 for ln in listed.splitlines() if ln.startswith("GPU "))
        assert controlplane.node_gpus(devcluster.api()) == real
        kube.create("pods", gpu_pod("gpu"))
        assert kube.wait_phase("gpu", timeout=60)["status"]["phase"] == "Succeeded"
        return
    before = controlplane.node_gpus(devcluster.api())
    devcluster.set_fake_gpus(0)
    try:
        kube.create("pods", gpu_pod("no-gpu"))

        def unschedulable() -> bool:
            conds = kube.pod("no-gpu").get("status", {}).get("conditions", [])
            return any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
                       for c in conds)

        wait_for("the scheduler to find no GPU", unschedulable)
        labels = devcluster.api().get("/api/v1/nodes/devcluster-node")["metadata"]["labels"]
        assert "nvidia.com/gpu.present" not in labels
        devcluster.set_fake_gpus(1)
        # Like GPU feature discovery, the node is labelled, so GPU node selectors match.
        labels = wait_for("GPU labels", lambda: devcluster.api().get(
            "/api/v1/nodes/devcluster-node")["metadata"]["labels"].get("nvidia.com/gpu.count"))
        assert labels == "1"
        assert kube.wait_phase("no-gpu", timeout=60)["status"]["phase"] == "Succeeded"
    finally:
        devcluster.set_fake_gpus(before)


def test_up_nodes_adds_and_removes_schedulable_nodes(kube: Kube, devcluster: Cluster) -> None:
    assert _cli("up", "--nodes", "2").returncode == 0
    try:
        code = "import os; open('/dev/termination-log','w').write(os.environ['NODE'])"
        kube.create("pods", pod_manifest(
            "on-two", code, nodeSelector={"kubernetes.io/hostname": "devcluster-node-2"},
            container={"env": [{"name": "NODE", "valueFrom": {
                "fieldRef": {"fieldPath": "spec.nodeName"}}}]}))
        pod = kube.wait_phase("on-two")
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == (
            "devcluster-node-2")
    finally:
        assert _cli("up", "--nodes", "1").returncode == 0
    names = {n["metadata"]["name"] for n in devcluster.api().get("/api/v1/nodes")["items"]}
    assert names == {"devcluster-node"}


def test_containers_see_only_the_gpus_allocated_to_them(kube: Kube, devcluster: Cluster) -> None:
    real = shutil.which("nvidia-smi") is not None
    before = controlplane.node_gpus(devcluster.api())
    if not real:
        devcluster.set_fake_gpus(2)
    gpus = controlplane.node_gpus(devcluster.api())
    code = ("import os, time; print(repr(os.environ.get('CUDA_VISIBLE_DEVICES')), flush=True); "
            "time.sleep(300)")
    names = [f"gpu-{i}" for i in range(min(gpus, 2))]
    try:
        for name in names:
            kube.create("pods", pod_manifest(name, code, container={
                "resources": {"limits": {"nvidia.com/gpu": "1"}}}))
        kube.create("pods", pod_manifest("cpu-only", code))

        def seen(name: str) -> str:
            log = devcluster.paths.pod_logs / f"{kube.ns}_{name}_main.log"
            return log.read_text().strip() if log.exists() else ""

        got = {n: wait_for(f"{n} to print its devices", lambda n=n: seen(n))
               for n in [*names, "cpu-only"]}
        assert got["cpu-only"] == "''"
        assert sorted(got[n] for n in names) == [f"'{i}'" for i in range(len(names))]
    finally:
        for name in [*names, "cpu-only"]:
            kube.api.delete(kube.path("pods", name), {"gracePeriodSeconds": 0})
        if not real:
            devcluster.set_fake_gpus(before)
