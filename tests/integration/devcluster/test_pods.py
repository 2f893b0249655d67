"""Pods on the devcluster node: phases, termination messages, env, volumes, restarts."""

from __future__ import annotations

import ipaddress
import json
import time

import pytest
from dc_helpers import Kube, pod_manifest, terminated, wait_for

from devcluster.cluster import Cluster
from devcluster.paths import BRIDGE_IP, NODE_NAME, POD_PREFIX_LEN


def test_node_is_ready_with_capacity(devcluster: Cluster) -> None:
    node = devcluster.api().get(f"/api/v1/nodes/{NODE_NAME}")
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "True"
    cap = node["status"]["capacity"]
    assert {"cpu", "memory", "pods", "nvidia.com/gpu"} <= set(cap)
    lease = devcluster.api().get(
        f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE_NAME}")
    assert lease["spec"]["holderIdentity"] == NODE_NAME
    out = devcluster.kubectl("get", "nodes", "-o", "name", check=True).stdout
    assert f"node/{NODE_NAME}" in out


_CASES = [
    ("succeeds and writes its termination message",
     "open('/dev/termination-log','w').write('all done')", "File", "Succeeded", 0,
     "all done"),
    ("fails with exit code 3 and its own message",
     "import sys; open('/dev/termination-log','w').write('bad input'); sys.exit(3)", "File",
     "Failed", 3, "bad input"),
    ("fails and falls back to its log",
     "import sys; print('traceback-ish line'); sys.exit(1)", "FallbackToLogsOnError",
     "Failed", 1, "traceback-ish line"),
]


@pytest.mark.parametrize(
    ("case", "code", "policy", "phase", "exit_code", "message"),
    [pytest.param(*c, id=str(c[0])) for c in _CASES],
)
def test_pod_phase_exit_code_and_termination_message(
    kube: Kube, case: str, code: str, policy: str, phase: str, exit_code: int, message: str
) -> None:
    t0 = time.monotonic()
    kube.create("pods", pod_manifest(
        "p", code, container={"terminationMessagePolicy": policy}))
    pod = kube.wait_phase("p")
    elapsed = time.monotonic() - t0
    assert pod["status"]["phase"] == phase
    term = terminated(pod)
    assert term["exitCode"] == exit_code
    assert term.get("message", "").strip() == message
    assert elapsed < 15, f"a trivial pod took {elapsed:.1f}s"


def test_custom_termination_message_path(kube: Kube) -> None:
    kube.create("pods", pod_manifest(
        "p", "open('/tmp/report.json','w').write('{\"ok\": true}')",
        container={"terminationMessagePath": "/tmp/report.json"}))
    pod = kube.wait_phase("p")
    assert json.loads(terminated(pod)["message"]) == {"ok": True}


ENV_CODE = """
import json, os
keys = ["POD_NAME", "POD_NS", "POD_UID", "POD_IP", "NODE", "SA", "APP", "FROM_CM", "FROM_SECRET",
        "CM_a", "CM_b", "S_token", "LITERAL", "EXPANDED", "KUBERNETES_SERVICE_HOST"]
open('/dev/termination-log', 'w').write(json.dumps({k: os.environ.get(k) for k in keys}))
"""


def test_env_from_downward_api_configmap_and_secret(kube: Kube) -> None:
    kube.create("configmaps", {"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "two"}})
    kube.create("secrets", {"metadata": {"name": "sec"}, "stringData": {"token": "s3cr3t"}})

    def field(path: str) -> dict[str, object]:
        return {"valueFrom": {"fieldRef": {"fieldPath": path}}}

    env = [
        {"name": "POD_NAME", **field("metadata.name")},
        {"name": "POD_NS", **field("metadata.namespace")},
        {"name": "POD_UID", **field("metadata.uid")},
        {"name": "POD_IP", **field("status.podIP")},
        {"name": "NODE", **field("spec.nodeName")},
        {"name": "SA", **field("spec.serviceAccountName")},
        {"name": "APP", **field("metadata.labels['app']")},
        {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "b"}}},
        {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
        {"name": "LITERAL", "value": "x"},
        {"name": "EXPANDED", "value": "$(LITERAL)-$(POD_NAME)"},
    ]
    env_from = [{"configMapRef": {"name": "cfg"}, "prefix": "CM_"},
                {"secretRef": {"name": "sec"}, "prefix": "S_"}]
    created = kube.create("pods", pod_manifest(
        "envpod", ENV_CODE, container={"env": env, "envFrom": env_from}))
    pod = kube.wait_phase("envpod")
    assert pod["status"]["phase"] == "Succeeded"
    got = json.loads(terminated(pod)["message"])
    assert got == {
        "POD_NAME": "envpod", "POD_NS": kube.ns, "POD_UID": created["metadata"]["uid"],
        "POD_IP": pod["status"]["podIP"], "NODE": NODE_NAME, "SA": "default", "APP": "envpod",
        "FROM_CM": "two", "FROM_SECRET": "s3cr3t", "CM_a": "1", "CM_b": "two",
        "S_token": "s3cr3t", "LITERAL": "x", "EXPANDED": "x-envpod",
        "KUBERNETES_SERVICE_HOST": pod["status"]["hostIP"],
    }
    subnet = ipaddress.ip_network(f"{BRIDGE_IP}/{POD_PREFIX_LEN}", strict=False)
    assert ipaddress.ip_address(pod["status"]["podIP"]) in subnet


def test_missing_configmap_keeps_the_container_waiting(kube: Kube) -> None:
    kube.create("pods", pod_manifest("p", "pass", container={
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]}))

    def waiting_reason() -> str | None:
        st = kube.pod("p").get("status", {}).get("containerStatuses", [{}])[0]
        return st.get("state", {}).get("waiting", {}).get("reason")

    assert wait_for("CreateContainerConfigError",
                    lambda: waiting_reason() == "CreateContainerConfigError")
    kube.create("configmaps", {"metadata": {"name": "nope"}, "data": {"k": "v"}})
    assert kube.wait_phase("p")["status"]["phase"] == "Succeeded"


VOLUME_CODE = """
import json, os
def read(p):
    with open(p) as f:
        return f.read()
sa = '/var/run/secrets/kubernetes.io/serviceaccount'
open('/scratch/x', 'w').write('scratch')
open('/data/out.txt', 'w').write('persisted')
out = {
    'cm': read('/etc/cfg/settings.yaml'), 'cm_item': read('/etc/cfg-items/renamed.txt'),
    'secret': read('/etc/sec/password'), 'scratch': read('/scratch/x'),
    'sa_files': sorted(f for f in os.listdir(sa) if not f.startswith('.')),
    'ns': read(sa + '/namespace'), 'token_parts': len(read(sa + '/token').split('.')),
    'labels': read('/etc/podinfo/labels'), 'cwd': os.getcwd(),
    'ro': os.access('/etc/cfg/settings.yaml', os.W_OK),
}
open('/dev/termination-log', 'w').write(json.dumps(out))
"""


def test_volumes_are_visible_at_their_mount_paths(kube: Kube, devcluster: Cluster) -> None:
    kube.create("configmaps", {"metadata": {"name": "cfg"},
                               "data": {"settings.yaml": "a: 1\n", "other": "o"}})
    kube.create("secrets", {"metadata": {"name": "sec"}, "stringData": {"password": "pw"}})
    kube.create("persistentvolumeclaims", {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    })
    mounts = [
        {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True},
        {"name": "cfg-items", "mountPath": "/etc/cfg-items"},
        {"name": "sec", "mountPath": "/etc/sec"},
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "data", "mountPath": "/data"},
        {"name": "podinfo", "mountPath": "/etc/podinfo"},
    ]
    volumes = [
        {"name": "cfg", "configMap": {"name": "cfg"}},
        {"name": "cfg-items", "configMap": {"name": "cfg",
                                            "items": [{"key": "other", "path": "renamed.txt"}]}},
        {"name": "sec", "secret": {"secretName": "sec"}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
    ]
    kube.create("pods", pod_manifest(
        "volpod", VOLUME_CODE, volumes=volumes,
        container={"volumeMounts": mounts, "workingDir": "/scratch"}, labels={"app": "vol"}))
    pod = kube.wait_phase("volpod", timeout=60)
    got = json.loads(terminated(pod).get("message", "{}"))
    assert pod["status"]["phase"] == "Succeeded", got
    assert got == {
        "cm": "a: 1\n", "cm_item": "o", "secret": "pw", "scratch": "scratch",
        "sa_files": ["ca.crt", "namespace", "token"], "ns": kube.ns, "token_parts": 3,
        "labels": 'app="vol"', "cwd": "/scratch", "ro": False,
    }
    pv_file = devcluster.paths.pv / kube.ns / "data" / "out.txt"
    assert pv_file.read_text() == "persisted"


def test_init_containers_run_in_order_before_the_main_container(kube: Kube) -> None:
    def step(name: str) -> dict[str, object]:
        return {"name": name, "image": "x", "volumeMounts": [{"name": "w", "mountPath": "/w"}],
                "command": ["python", "-c", f"open('/w/log','a').write('{name} ')"]}

    kube.create("pods", pod_manifest(
        "p", "open('/dev/termination-log','w').write(open('/w/log').read())",
        initContainers=[step("first"), step("second")], volumes=[{"name": "w", "emptyDir": {}}],
        container={"volumeMounts": [{"name": "w", "mountPath": "/w"}]}))
    pod = kube.wait_phase("p")
    assert terminated(pod)["message"] == "first second "
    conds = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conds["Initialized"] == "True"


def test_on_failure_restarts_until_the_container_succeeds(kube: Kube) -> None:
    code = ("import os, sys; p='/w/n'; n=int(open(p).read()) if os.path.exists(p) else 0; "
            "open(p,'w').write(str(n+1)); sys.exit(0 if n >= 1 else 2)")
    kube.create("pods", pod_manifest(
        "p", code, restartPolicy="OnFailure", volumes=[{"name": "w", "emptyDir": {}}],
        container={"volumeMounts": [{"name": "w", "mountPath": "/w"}]}))
    pod = kube.wait_phase("p")
    st = pod["status"]["containerStatuses"][0]
    assert pod["status"]["phase"] == "Succeeded"
    assert st["restartCount"] == 1
    assert st["lastState"]["terminated"]["exitCode"] == 2


def test_runs_as_the_requested_non_root_user(kube: Kube) -> None:
    code = ("import os, json, getpass, kubernetes; open('/scratch/f','w').write('x'); "
            "open('/dev/termination-log','w').write("
            "json.dumps([os.getuid(), os.getgid(), getpass.getuser()]))")
    kube.create("pods", pod_manifest(
        "p", code,
        securityContext={"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                         "seccompProfile": {"type": "RuntimeDefault"}},
        volumes=[{"name": "s", "emptyDir": {}}],
        container={"volumeMounts": [{"name": "s", "mountPath": "/scratch"}],
                   "securityContext": {"allowPrivilegeEscalation": False,
                                       "capabilities": {"drop": ["ALL"]}}}))
    pod = kube.wait_phase("p", timeout=60)
    assert pod["status"]["phase"] == "Succeeded", terminated(pod)
    assert json.loads(terminated(pod)["message"]) == [65532, 65532, "u65532"]


def test_events_say_the_image_was_ignored(kube: Kube) -> None:
    kube.create("pods", pod_manifest("p", "pass"))
    kube.wait_phase("p")

    def reasons() -> set[str]:
        evs = kube.api.get(f"/api/v1/namespaces/{kube.ns}/events")["items"]
        return {e["reason"] for e in evs if e["involvedObject"]["name"] == "p"}

    wait_for("ImageIgnored event", lambda: "ImageIgnored" in reasons())
