"""``up`` and ``down`` themselves, on a second devcluster instance with its own state and network.

The shared cluster of the test run is left alone: ``DEVCLUSTER_INSTANCE=7`` gives this one its own
bridge (``ppml7``, ``10.244.7.0/24``), ports and namespaces prefix, and a temporary state dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dc_helpers import wait_for

from devcluster.cluster import Cluster

INSTANCE = "7"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _run(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devcluster", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _processes_mentioning(text: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and _alive(int(d.name)):
            out.append(int(d.name))
    return out


@pytest.mark.slow
def test_up_is_idempotent_and_down_leaves_no_process_namespace_or_bridge(
    devcluster: Cluster, tmp_path: Path
) -> None:
    state = tmp_path / "dc"
    env = {**os.environ, "DEVCLUSTER_INSTANCE": INSTANCE, "DEVCLUSTER_STATE_DIR": str(state),
           "PATH": f"{devcluster.bin_dir}:{os.environ.get('PATH', '')}"}
    env.pop("KUBECONFIG", None)
    timings: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        first = _run(env, "up")
        timings["cold_up_s"] = time.monotonic() - t0
        assert first.returncode == 0, first.stderr[-3000:]
        kubectl = [str(devcluster.bin_dir / "kubectl"), f"--kubeconfig={state / 'kubeconfig'}"]
        t0 = time.monotonic()
        subprocess.run([*kubectl, "run", "sleeper", "--image=x", "--restart=Never", "--command",
                        "--", "python", "-c", "import time; time.sleep(600)"],
                       check=True, capture_output=True, timeout=60)
        subprocess.run([*kubectl, "wait", "--for=jsonpath={.status.phase}=Running",
                        "pod/sleeper", "--timeout=60s"], check=True, capture_output=True,
                       timeout=90)
        timings["pod_running_s"] = time.monotonic() - t0
        subprocess.run([*kubectl, "run", "server", "--image=x", "--restart=Always", "--command",
                        "--", "python", "-c", "import time; time.sleep(600)"],
                       check=True, capture_output=True, timeout=60)
        subprocess.run([*kubectl, "wait", "--for=jsonpath={.status.phase}=Running",
                        "pod/server", "--timeout=60s"], check=True, capture_output=True,
                       timeout=90)
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert f"dcpod{INSTANCE}-" in netns
        pod_pids = [int(p) for ln in netns.splitlines() if ln.startswith(f"dcpod{INSTANCE}-")
                    for p in subprocess.run(["ip", "netns", "pids", ln.split()[0]],
                                            capture_output=True, text=True).stdout.split()]
        assert pod_pids
        pids = [int(f.read_text().split()[0]) for f in (state / "run").glob("*.pid")]
        assert len(pids) == 5 and all(_alive(p) for p in pids)

        t0 = time.monotonic()
        again = _run(env, "up")
        timings["up_when_running_s"] = time.monotonic() - t0
        assert again.returncode == 0 and "already up" in again.stdout

        t0 = time.monotonic()
        down = _run(env, "down")
        timings["down_s"] = time.monotonic() - t0
        assert down.returncode == 0, down.stderr
        assert not [p for p in pids + pod_pids if _alive(p)]
        assert not _processes_mentioning(str(state))
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert f"dcpod{INSTANCE}-" not in netns
        link = subprocess.run(["ip", "link", "show", f"ppml{INSTANCE}"], capture_output=True)
        assert link.returncode != 0

        t0 = time.monotonic()
        warm = _run(env, "up")
        timings["warm_up_s"] = time.monotonic() - t0
        assert warm.returncode == 0, warm.stderr[-3000:]
        # After the restart, the restartPolicy Never pod has failed (running it again would
        # run its workload twice) and the restartPolicy Always pod runs again as a restart.
        subprocess.run([*kubectl, "wait", "--for=jsonpath={.status.phase}=Failed",
                        "pod/sleeper", "--timeout=60s"], check=True, capture_output=True,
                       timeout=90)
        got = json.loads(subprocess.run([*kubectl, "get", "pod", "sleeper", "-o", "json"],
                                        check=True, capture_output=True, timeout=30).stdout)
        assert got["status"]["reason"] == "NodeAgentRestarted"
        assert got["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137

        def server_restarted() -> bool:
            out = subprocess.run([*kubectl, "get", "pod", "server", "-o", "json"],
                                 check=True, capture_output=True, timeout=30).stdout
            st = json.loads(out)["status"]
            return bool(st.get("phase") == "Running"
                        and st["containerStatuses"][0].get("restartCount", 0) >= 1
                        and "running" in st["containerStatuses"][0]["state"])

        wait_for("the Always pod to run again", server_restarted, timeout=60)
        # Lost pid files (say, someone removed them): down still finds its own components
        # by binary and state directory.
        for f in (state / "run").glob("*.pid"):
            f.unlink()
        assert _run(env, "down").returncode == 0
        assert not _processes_mentioning(str(state))
    finally:
        _run(env, "down", "--purge")
        print("devcluster timings:", json.dumps({k: round(v, 2) for k, v in timings.items()}))
    assert not state.exists()
    # The shared cluster was not touched.
    assert devcluster.kubectl("get", "--raw", "/readyz").stdout == "ok"
