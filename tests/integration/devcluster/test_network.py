"""Pod network identity and Service names resolved from inside pods."""

from __future__ import annotations

import json
import urllib.request

from dc_helpers import Kube, pod_manifest, terminated, wait_for

SERVER = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ['WHO'].encode()
        self.send_response(200); self.send_header('Content-Length', str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()
"""

CLIENT = """
import json, socket, urllib.request
out = {}
for name in ['svc-a', 'svc-b.{ns}', 'svc-a.{ns}.svc', 'svc-b.{ns}.svc.cluster.local']:
    out[name] = urllib.request.urlopen('http://%s:8080/' % name, timeout=5).read().decode()
out['hostname'] = socket.gethostname()
open('/dev/termination-log', 'w').write(json.dumps(out))
"""


def _server(name: str) -> dict[str, object]:
    return pod_manifest(
        name, SERVER, restartPolicy="Always", labels={"app": name},
        container={"env": [{"name": "WHO", "value": name}],
                   "ports": [{"containerPort": 8080, "name": "http"}],
                   "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1}},
    )


def _service(name: str, app: str) -> dict[str, object]:
    return {"metadata": {"name": name},
            "spec": {"selector": {"app": app},
                     "ports": [{"port": 8080, "targetPort": 8080, "name": "http"}]}}


def test_two_pods_serve_the_same_port_and_a_third_reaches_both_by_service_name(
    kube: Kube,
) -> None:
    kube.create("pods", _server("server-a"))
    kube.create("pods", _server("server-b"))
    kube.create("services", _service("svc-a", "server-a"))
    kube.create("services", _service("svc-b", "server-b"))
    pods = [kube.wait_phase(n, ("Running",)) for n in ("server-a", "server-b")]
    ips = [p["status"]["podIP"] for p in pods]
    assert len(set(ips)) == 2

    def ready(name: str) -> bool:
        conds = {c["type"]: c["status"] for c in kube.pod(name)["status"]["conditions"]}
        return conds.get("Ready") == "True"

    for n in ("server-a", "server-b"):
        wait_for(f"{n} Ready", lambda n=n: ready(n))
    # The host (where the operator runs) reaches pod IPs directly.
    for ip, who in zip(ips, ("server-a", "server-b"), strict=True):
        assert urllib.request.urlopen(f"http://{ip}:8080/", timeout=5).read().decode() == who

    def endpoints_ready() -> bool:
        slices = kube.api.get(f"/apis/discovery.k8s.io/v1/namespaces/{kube.ns}/endpointslices")
        names = {s["metadata"]["labels"].get("kubernetes.io/service-name")
                 for s in slices["items"]
                 if any((e.get("conditions") or {}).get("ready") for e in s.get("endpoints") or [])}
        return {"svc-a", "svc-b"} <= names

    wait_for("ready endpoints of both Services", endpoints_ready)
    kube.create("pods", pod_manifest("client", CLIENT.replace("{ns}", kube.ns)))
    pod = kube.wait_phase("client")
    msg = terminated(pod).get("message", "")
    assert pod["status"]["phase"] == "Succeeded", msg
    assert json.loads(msg) == {
        "svc-a": "server-a", f"svc-b.{kube.ns}": "server-b", f"svc-a.{kube.ns}.svc": "server-a",
        f"svc-b.{kube.ns}.svc.cluster.local": "server-b", "hostname": "client",
    }


def test_pods_have_no_route_off_the_machine(kube: Kube) -> None:
    code = """
import json, socket
out = {}
for target in [('1.1.1.1', 53), ('8.8.8.8', 443)]:
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect(target); out[target[0]] = 'connected'
    except OSError as err:
        out[target[0]] = type(err).__name__
    finally:
        s.close()
open('/dev/termination-log', 'w').write(json.dumps(out))
"""
    kube.create("pods", pod_manifest("p", code))
    pod = kube.wait_phase("p")
    got = json.loads(terminated(pod)["message"])
    assert "connected" not in got.values(), got


def test_a_host_network_pod_has_the_node_address(kube: Kube) -> None:
    code = ("import os, socket; open('/dev/termination-log','w').write("
            "os.environ['IP'] + ' ' + socket.gethostname())")
    kube.create("pods", pod_manifest("hostnet", code, hostNetwork=True, container={
        "env": [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}))
    pod = kube.wait_phase("hostnet")
    assert pod["status"]["podIP"] == pod["status"]["hostIP"]
    assert terminated(pod)["message"] == f"{pod['status']['hostIP']} hostnet"


RENDEZVOUS = """
import os, socket, time
idx = int(os.environ['JOB_COMPLETION_INDEX'])
if idx == 0:
    srv = socket.create_server(('0.0.0.0', 29500))
    conn, _ = srv.accept()
    conn.sendall(b'hello from ' + socket.gethostname().encode())
    conn.close()
else:
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(('ddp-0.workers', 29500), timeout=2) as s:
                msg = s.recv(100).decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    open('/dev/termination-log', 'w').write(msg)
"""


def test_indexed_job_workers_reach_worker_zero_by_its_headless_service_name(kube: Kube) -> None:
    kube.create("services", {"metadata": {"name": "workers"}, "spec": {
        "clusterIP": "None", "publishNotReadyAddresses": True,
        "selector": {"batch.kubernetes.io/job-name": "ddp"},
        "ports": [{"name": "rendezvous", "port": 29500}]}})
    kube.create("jobs", {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "ddp"},
        "spec": {"completions": 2, "parallelism": 2, "completionMode": "Indexed",
                 "backoffLimit": 0, "template": {"spec": {
                     "restartPolicy": "Never", "subdomain": "workers",
                     "containers": [{"name": "main", "image": "x",
                                     "command": ["python", "-c", RENDEZVOUS]}]}}},
    }, group="batch/v1")

    def finished() -> dict[str, object] | None:
        j = kube.get("jobs", "ddp", group="batch/v1")
        conds = {c["type"]: c["status"] for c in j.get("status", {}).get("conditions", [])}
        return j if conds.get("Complete") == "True" or conds.get("Failed") == "True" else None

    job = wait_for("the indexed Job to finish", finished, timeout=90)
    assert job["status"].get("succeeded") == 2, job["status"]
    pods = kube.api.get(kube.path("pods"), labelSelector="batch.kubernetes.io/job-name=ddp")
    msgs = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]:
            terminated(p).get("message", "") for p in pods["items"]}
    assert msgs["1"] == "hello from ddp-0"
