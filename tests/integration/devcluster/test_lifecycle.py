"""Controllers acting on devcluster pods: Jobs, garbage collection, graceful deletion."""

from __future__ import annotations

import time

import pytest
from dc_helpers import Kube, pod_manifest, wait_for

from devcluster.cluster import Cluster


def test_a_job_completes_through_the_job_controller(kube: Kube) -> None:
    job = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "count"},
        "spec": {"completions": 2, "parallelism": 1, "backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "x", "command": ["python", "-c", "pass"]}],
        }}},
    }
    kube.create("jobs", job, group="batch/v1")

    def complete() -> bool:
        j = kube.get("jobs", "count", group="batch/v1")
        conds = {c["type"]: c["status"] for c in j.get("status", {}).get("conditions", [])}
        return conds.get("Complete") == "True"

    wait_for("Job Complete", complete, timeout=60)
    j = kube.get("jobs", "count", group="batch/v1")
    assert j["status"]["succeeded"] == 2


def test_deleting_an_owner_garbage_collects_its_children(kube: Kube) -> None:
    owner = kube.create("configmaps", {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
           "uid": owner["metadata"]["uid"], "controller": True}
    kube.create("configmaps", {"metadata": {"name": "child", "ownerReferences": [ref]}})
    kube.create("pods", {**pod_manifest("child-pod", "import time; time.sleep(300)"),
                         "metadata": {"name": "child-pod", "ownerReferences": [ref]}})
    kube.wait_phase("child-pod", ("Running",))
    kube.api.delete(kube.path("configmaps", "owner"))
    kube.gone("configmaps", "child", timeout=60)
    kube.gone("pods", "child-pod", timeout=60)


TRAP = """
import signal, sys, time
def on_term(sig, frame):
    print('got SIGTERM', flush=True)
    {after}
signal.signal(signal.SIGTERM, on_term)
print('serving', flush=True)
while True:
    time.sleep(0.1)
"""


_CASES = [
    ("exits 1s after SIGTERM, well inside its grace period",
     "time.sleep(1); sys.exit(0)", 10, 1.0, 8.0),
    ("ignores SIGTERM and is killed when its 3s grace period ends",
     "pass", 3, 3.0, 8.0),
]


@pytest.mark.parametrize(
    ("case", "after", "grace", "low", "high"),
    [pytest.param(*c, id=str(c[0])) for c in _CASES],
)
def test_deleting_a_running_pod_sends_sigterm_and_honours_the_grace_period(
    kube: Kube, devcluster: Cluster, case: str, after: str, grace: int, low: float, high: float
) -> None:
    kube.create("pods", pod_manifest("p", TRAP.replace("{after}", after),
                                     terminationGracePeriodSeconds=grace))
    kube.wait_phase("p", ("Running",))
    log = devcluster.paths.pod_logs / f"{kube.ns}_p_main.log"
    wait_for("the pod to print serving", lambda: "serving" in log.read_text())
    t0 = time.monotonic()
    kube.api.delete(kube.path("pods", "p"))
    elapsed = kube.gone("pods", "p", timeout=30)
    assert "got SIGTERM" in log.read_text()
    assert low <= elapsed <= high, f"deletion took {elapsed:.1f}s"
    assert time.monotonic() - t0 >= low


def test_active_deadline_fails_a_pod_that_runs_too_long(kube: Kube) -> None:
    t0 = time.monotonic()
    kube.create("pods", pod_manifest("slow", "import time; time.sleep(300)",
                                     activeDeadlineSeconds=2, terminationGracePeriodSeconds=1))
    pod = kube.wait_phase("slow", ("Failed",), timeout=30)
    assert pod["status"]["reason"] == "DeadlineExceeded"
    assert 2 <= time.monotonic() - t0 < 15


def test_a_failing_liveness_probe_restarts_the_container(kube: Kube) -> None:
    kube.create("pods", pod_manifest(
        "unhealthy", "import time; time.sleep(300)", restartPolicy="Always",
        terminationGracePeriodSeconds=1,
        container={"livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1,
                                     "failureThreshold": 2}}))

    def restarted() -> dict[str, object] | None:
        st = kube.pod("unhealthy").get("status", {}).get("containerStatuses", [{}])[0]
        return st if st.get("restartCount", 0) >= 1 else None

    st = wait_for("a liveness restart", restarted, timeout=30)
    assert st["lastState"]["terminated"]["exitCode"] == 128 + 15  # SIGTERM


def test_an_exec_readiness_probe_runs_inside_the_container_view(kube: Kube) -> None:
    code = "import time; time.sleep(2); open('/tmp/ready', 'w').close(); time.sleep(300)"
    probe = ["python", "-c", "import os, sys; sys.exit(0 if os.path.exists('/tmp/ready') else 1)"]
    kube.create("pods", pod_manifest(
        "probed", code, restartPolicy="Always", terminationGracePeriodSeconds=1,
        container={"readinessProbe": {"exec": {"command": probe}, "periodSeconds": 1}}))
    kube.wait_phase("probed", ("Running",))

    def ready() -> bool:
        conds = {c["type"]: c["status"] for c in kube.pod("probed")["status"]["conditions"]}
        return conds.get("Ready") == "True"

    assert not ready()
    t0 = time.monotonic()
    wait_for("the exec probe to pass", ready, timeout=30)
    assert time.monotonic() - t0 < 10
