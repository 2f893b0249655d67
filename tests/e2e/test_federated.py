"""The federated examples on devcluster: real Flower federations run by the operator.

Each test applies one manifest from ``examples/federated/`` with kubectl into a fresh namespace
(Pod Security ``restricted`` enforced), runs the operator as ``python -m ppml_operator`` watching
that namespace, and waits for the FederatedJob's ``Complete`` condition. The SuperLink, the
SuperNodes and the submitter are pods run by devcluster's node agent (each its own network
namespace; Service names resolve through per-pod hosts files), talking over the job's own TLS
with SuperNode authentication. Then the test checks the rounds, the final accuracy (from the
owner-side ``ExactRoundMetrics`` event: the status holds none), the teardown, and that every
budget holds exactly one committed charge for the job.

``test_digits_3_silos`` also starts two rogue SuperNodes against the live SuperLink: one that
trusts another CA (its TLS handshake fails) and one that trusts the job's CA but holds a key the
job never registered (the SuperLink refuses to activate it). devcluster enforces the job's
NetworkPolicies, which would refuse them first: an extra policy lets them through, so these
checks exercise TLS and authentication on their own.

Every example ends with a useful model, and the tests assert its accuracy: FedAvg on non-IID
shards >= 0.85, local DP (and SecAgg+ with it, epsilon <= 10 per clinic) >= 0.80.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ppml_operator.render import tls
from ppml_testing.conditions import condition, is_true

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "federated"
GROUP = "ppml.dev"
Obj = dict[str, Any]


# --- helpers ------------------------------------------------------------------------------------


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 2.0
             ) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")




class Cluster:
    """kubectl in one namespace."""

    def __init__(self, devcluster: Any, namespace: str) -> None:
        self.dc = devcluster
        self.ns = namespace

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.dc.kubectl("-n", self.ns, *args, input=input, timeout=120)

    def ok(self, *args: str, input: str | None = None) -> str:
        p = self.run(*args, input=input)
        assert p.returncode == 0, f"kubectl {' '.join(args)}: {p.stderr}"
        return p.stdout

    def get(self, kind: str, name: str) -> Obj | None:
        p = self.run("get", kind, name, "-o", "json")
        return json.loads(p.stdout) if p.returncode == 0 else None

    def items(self, kind: str, selector: str | None = None) -> list[Obj]:
        args = ["get", kind, "-o", "json"] + (["-l", selector] if selector else [])
        items: list[Obj] = json.loads(self.ok(*args))["items"]
        return items

    def logs(self, pod: str) -> str:
        p = self.run("logs", pod, "--tail", "-1")
        return p.stdout if p.returncode == 0 else ""


class OperatorProcess:
    """``python -m ppml_operator --namespace NS`` as a subprocess."""

    def __init__(self, kubeconfig: Path, namespace: str, log: Path) -> None:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PPML_RECONCILE_INTERVAL": "2",
               "PYTHONUNBUFFERED": "1"}
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ppml_operator", "--namespace", namespace],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def crds(devcluster: Any) -> None:
    p = devcluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                           str(REPO / "crds"))
    assert p.returncode == 0, p.stderr
    for crd in ("privacybudgets", "privatetrainingjobs", "federatedjobs"):
        devcluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}.{GROUP}",
                           "--timeout=60s")


@pytest.fixture
def kube(devcluster: Any, crds: None, namespace: str) -> Cluster:
    devcluster.kubectl("label", "namespace", namespace,
                       "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
    return Cluster(devcluster, namespace)


@pytest.fixture
def operator(devcluster: Any, kube: Cluster, tmp_path: Path) -> Iterator[OperatorProcess]:
    handle = OperatorProcess(Path(devcluster.kubeconfig), kube.ns, tmp_path / "operator.log")
    yield handle
    # Delete the test's objects while the operator still runs: it holds finalizers on them, and
    # a namespace would otherwise stay Terminating for good once the operator is gone.
    kube.run("delete", "fedjob,pbudget", "--all", "--wait=true", "--timeout=180s")
    handle.stop()
    print(f"----- operator log (tail)\n{handle.log.read_text(errors='replace')[-4000:]}")


def example(name: str) -> tuple[str, list[Obj]]:
    text = (EXAMPLES / name).read_text()
    return text, [d for d in yaml.safe_load_all(text) if d]


def run_example(kube: Cluster, name: str, timeout: float,
                during: Callable[[Obj], None] | None = None) -> tuple[Obj, list[Obj], Obj]:
    """Apply an example and wait for its FederatedJob to finish; return job, docs, peak.

    ``peak`` holds the most SuperNodes seen connected, and ``live``: each status.federation
    seen while the job ran (neither Complete nor Failed), in order.
    """
    text, docs = example(name)
    job_doc = next(d for d in docs if d["kind"] == "FederatedJob")
    job_name = job_doc["metadata"]["name"]
    kube.ok("apply", "-f", "-", input=text)
    peak: Obj = {"clientsConnected": 0, "live": []}

    def finished() -> Obj | None:
        job = kube.get("fedjob", job_name)
        fed = ((job or {}).get("status") or {}).get("federation") or {}
        peak["clientsConnected"] = max(peak["clientsConnected"],
                                       int(fed.get("clientsConnected") or 0))
        if job is not None and during is not None:
            during(job)
        if is_true(job, "Complete") or is_true(job, "Failed"):
            return job
        if fed:
            peak["live"].append(fed)
        return None

    try:
        job = wait_for(f"FederatedJob {job_name} to finish", finished, timeout, interval=3)
    finally:
        for pod in kube.items("pods"):
            name = pod["metadata"]["name"]
            print(f"----- {name}\n{kube.logs(name)[-2500:]}")
    return job, docs, peak


def final_accuracy(kube: Cluster, job: Obj) -> float:
    """The final global model's exact test accuracy, from the owner-side round metrics.

    The job's status holds no loss or accuracy (computed on the silos' records without noise,
    they are no DP release): the operator posts them as an ``ExactRoundMetrics`` event on the
    submitter Job, in the job's namespace for a federation on inline data, where owner and
    analyst are one party. It is posted last in the pass that completed the job: wait for it.
    """
    submitter = f"{job['metadata']['name']}-submit"

    def last_round() -> str | None:
        for event in kube.items("events"):
            if event.get("reason") == "ExactRoundMetrics" and \
                    event["involvedObject"]["name"] == submitter:
                return str(event["message"])
        return None

    message = wait_for("the ExactRoundMetrics event", last_round, 60, interval=1)
    rounds = re.findall(r"round (\d+): loss [^,]+, accuracy ([0-9.]+)", message)
    assert rounds, message
    return float(rounds[-1][1])


def assert_completed(kube: Cluster, job: Obj, peak: Obj) -> None:
    spec, status = job["spec"], job["status"]
    assert is_true(job, "Complete"), condition(job, "Failed")
    assert is_true(job, "Admitted")
    fed = status["federation"]
    assert fed["roundsCompleted"] == spec["rounds"]
    assert [r["round"] for r in fed["rounds"]] == list(range(1, spec["rounds"] + 1))
    assert all(r["clients"] == len(spec["clients"]) for r in fed["rounds"])
    # No loss or accuracy in status (see final_accuracy): only counts and durations.
    assert all(set(r) <= {"round", "clients", "wallSeconds"} for r in fed["rounds"])
    assert "rounds completed" in condition(job, "Complete")["message"]
    assert 0.0 < final_accuracy(kube, job) <= 1.0
    assert peak["clientsConnected"] == len(spec["clients"])
    # Teardown: the SuperLink and SuperNodes stop, the keys go; the submitter's pod stays.
    uid = job["metadata"]["uid"]
    wait_for("the federation's pods and keys to go", lambda: not [
        p for p in kube.items("pods", f"ppml.dev/job-uid={uid}")
        if p["metadata"]["labels"]["app.kubernetes.io/component"] in ("superlink", "supernode")
    ] and not kube.items("secrets", f"ppml.dev/job-uid={uid}"), 120)


def assert_live_rounds(job: Obj, peak: Obj) -> None:
    """status.federation.roundsCompleted rose while the federation ran, before Complete.

    The operator scrapes the ServerApp's gauges in the SuperLink's pod each pass; each live
    round in status has its number and duration only (the submitter's report adds the clients
    when the run ended, possibly a pass before the Complete condition).
    """
    seen = [int(f.get("roundsCompleted") or 0) for f in peak["live"]]
    assert seen == sorted(seen), f"roundsCompleted went back: {seen}"
    assert len(set(seen)) >= 2 and max(seen) > 0, f"no live rounds seen: {seen}"
    assert max(seen) <= job["spec"]["rounds"]
    live_rounds = [r for f in peak["live"] for r in f.get("rounds") or []]
    assert live_rounds, peak["live"]
    assert all(set(r) <= {"round", "clients", "wallSeconds"} and float(r["wallSeconds"]) > 0
               for r in live_rounds), live_rounds
    assert any("clients" not in r for r in live_rounds), "no round was seen before the report"


def assert_charged_once(kube: Cluster, job: Obj, budgets: list[str]) -> None:
    uid = job["metadata"]["uid"]
    charged = {b["name"]: b for b in job["status"]["privacy"]["budgets"]}
    assert sorted(charged) == sorted(budgets)
    for name in budgets:
        budget = kube.get("pbudget", name)
        assert budget is not None
        mine = [c for c in budget["status"].get("charges") or [] if c["jobUID"] == uid]
        assert len(mine) == 1, mine
        assert mine[0]["state"] == "Committed"
        assert mine[0]["epsilon"] == charged[name]["epsilon"]
        assert charged[name]["state"] == "Committed"
        assert float(budget["status"]["spentEpsilon"]) > 0


# --- the rogue SuperNodes -----------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def rogue_secret(name: str) -> tuple[Obj, str]:
    """A Secret with a foreign CA and an unregistered key; returns it and the key's PEM."""
    from datetime import UTC, datetime

    bundle = tls.issue_serving_bundle("rogue", ["rogue"], datetime.now(UTC))
    keys = tls.generate_auth_key_pair()
    public = serialization.load_ssh_public_key(keys.public_openssh)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    pem = public.public_bytes(serialization.Encoding.PEM,
                              serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
              "data": {"ca.crt": _b64(bundle.ca_pem), "auth.key": _b64(keys.private_openssh)}}
    return secret, pem


ROGUE_LABEL = "e2e.ppml.dev/rogue"


def let_rogues_reach_the_superlink() -> Obj:
    """A NetworkPolicy opening the SuperLink port to the rogue pods.

    devcluster enforces the job's own policies, which refuse a pod outside the job before any
    TLS handshake (``tests/integration/devcluster/test_netpol_operator.py`` shows that). Labels
    are no identity, though: any pod of the namespace can wear the job's. This extra policy
    (policies add up) lets the rogues through the network so that TLS and SuperNode
    authentication are tested on their own.
    """
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "let-rogues-reach-the-superlink"},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "superlink"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {ROGUE_LABEL: "true"}}}],
                         "ports": [{"protocol": "TCP", "port": 9092}]}],
        },
    }


def rogue_pod(name: str, superlink: str, ca_secret: str, key_secret: str) -> Obj:
    security = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                "runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {
                    "type": "RuntimeDefault"}}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {ROGUE_LABEL: "true"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "rogue", "image": "ppml-runtime",
                "command": ["flower-supernode", "--superlink", superlink,
                            "--root-certificates", "/rogue-ca/ca.crt",
                            "--auth-supernode-private-key", "/rogue-key/auth.key",
                            "--host", "127.0.0.1", "--port", "9094", "--max-wait-time", "30"],
                "env": [{"name": "HOME", "value": "/tmp"}],
                "securityContext": security,
                "volumeMounts": [{"name": "ca", "mountPath": "/rogue-ca", "readOnly": True},
                                 {"name": "key", "mountPath": "/rogue-key", "readOnly": True},
                                 {"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [
                {"name": "ca", "secret": {"secretName": ca_secret,
                                          "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"name": "key", "secret": {"secretName": key_secret,
                                           "items": [{"key": "auth.key", "path": "auth.key"}]}},
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.timeout(1500)
def test_digits_3_silos(kube: Cluster, operator: OperatorProcess) -> None:
    """FedAvg over three silos completes; SuperNodes without the CA or a registered key are
    refused by the live SuperLink."""
    _, docs = example("digits-3-silos.yaml")
    name = docs[0]["metadata"]["name"]
    superlink = f"{name}-superlink.{kube.ns}.svc.cluster.local:9092"
    secret, rogue_pem = rogue_secret("rogue-keys")
    started: dict[str, bool] = {}

    def start_rogues(job: Obj) -> None:
        if started or not is_true(job, "Running"):
            return
        kube.ok("apply", "-f", "-", input=json.dumps(secret))
        kube.ok("apply", "-f", "-", input=json.dumps(let_rogues_reach_the_superlink()))
        # Trusts another CA: the TLS handshake with the job's SuperLink fails.
        kube.ok("apply", "-f", "-", input=json.dumps(
            rogue_pod("rogue-no-ca", superlink, "rogue-keys", "rogue-keys")))
        # Trusts the job's CA (public information) but holds a key the job never registered.
        kube.ok("apply", "-f", "-", input=json.dumps(
            rogue_pod("rogue-no-key", superlink, f"{name}-tls", "rogue-keys")))
        started["yes"] = True

    def rogues_refused() -> bool:
        link_log = kube.logs(f"{name}-superlink")
        no_ca = kube.logs("rogue-no-ca").lower()
        return ("handshake" in no_ca or "certificate" in no_ca) and (
            rogue_pem.strip().splitlines()[1] in link_log.replace("\\n", "\n"))

    def during(job: Obj) -> None:
        start_rogues(job)
        if started and "checked" not in started and rogues_refused():
            started["checked"] = True

    job, _, peak = run_example(kube, "digits-3-silos.yaml", timeout=1200, during=during)
    assert_completed(kube, job, peak)
    # Non-IID (Dirichlet) shards without DP: the model is good for something (~0.93 measured).
    assert final_accuracy(kube, job) >= 0.85
    assert job["status"]["privacy"]["budgets"] == []  # privacy mode None charges nothing
    assert started.get("checked"), "the rogue SuperNodes were not seen refused while it ran"
    for rogue in ("rogue-no-ca", "rogue-no-key"):
        pod = wait_for(f"{rogue} to give up", lambda r=rogue: (
            (kube.get("pod", r) or {}).get("status", {}).get("phase") in ("Failed", "Succeeded")
            and kube.get("pod", r)), 120)
        assert pod["status"]["phase"] == "Failed", f"{rogue} did not fail"
        assert "SuperNode ID" not in kube.logs(rogue), f"{rogue} was admitted"
    assert "certificate verify failed" in kube.logs("rogue-no-ca")
    assert "Failed to activate SuperNode" in kube.logs("rogue-no-key")


@pytest.mark.timeout(2400)
def test_digits_secagg_with_dp(kube: Cluster, operator: OperatorProcess) -> None:
    """SecAgg+ with DP at epsilon <= 10 per clinic delivers test accuracy >= 0.80, each clinic's
    budget charged exactly once."""
    job, docs, peak = run_example(kube, "digits-secagg.yaml", timeout=2100)
    assert_completed(kube, job, peak)
    assert_live_rounds(job, peak)  # ten SecAgg+ rounds of several seconds each
    budgets = [d["metadata"]["name"] for d in docs if d["kind"] == "PrivacyBudget"]
    assert len(budgets) == 3
    assert_charged_once(kube, job, budgets)
    assert all(float(b["epsilon"]) <= 10 for b in job["status"]["privacy"]["budgets"])
    assert final_accuracy(kube, job) >= 0.80
    # Re-applying the manifest (a GitOps re-sync) never charges again.
    kube.ok("apply", "-f", "-", input=example("digits-secagg.yaml")[0])
    time.sleep(8)
    assert_charged_once(kube, kube.get("fedjob", job["metadata"]["name"]) or job, budgets)


@pytest.mark.timeout(1800)
def test_digits_local_dp(kube: Cluster, operator: OperatorProcess) -> None:
    """Local DP-SGD at each silo completes and charges each silo's own budget exactly once."""
    job, docs, peak = run_example(kube, "digits-local-dp.yaml", timeout=1500)
    assert_completed(kube, job, peak)
    assert final_accuracy(kube, job) >= 0.80
    budgets = [d["metadata"]["name"] for d in docs if d["kind"] == "PrivacyBudget"]
    assert len(budgets) == 3
    assert_charged_once(kube, job, budgets)
    for name in budgets:
        budget = kube.get("pbudget", name)
        assert budget is not None
        [charge] = [c for c in budget["status"]["charges"]
                    if c["jobUID"] == job["metadata"]["uid"]]
        assert [e["type"] for e in charge["events"]] == ["LocalDpSgd"]


@pytest.mark.timeout(900)
def test_deleting_a_running_federation_commits_its_charge_and_tears_it_down(
    kube: Cluster, operator: OperatorProcess
) -> None:
    """Deleted while its pods run (they may have touched data): commit, never release."""
    text, docs = example("digits-secagg.yaml")
    job_doc = next(d for d in docs if d["kind"] == "FederatedJob")
    name = job_doc["metadata"]["name"]
    budget = next(d for d in docs if d["kind"] == "PrivacyBudget")["metadata"]["name"]
    kube.ok("apply", "-f", "-", input=text)
    job = wait_for("the federation to run", lambda: (
        j := kube.get("fedjob", name)) is not None and is_true(j, "Running") and j, 600)
    uid = job["metadata"]["uid"]
    kube.ok("delete", "fedjob", name, "--wait=true", "--timeout=300s")
    stored = kube.get("pbudget", budget)
    assert stored is not None
    [charge] = [c for c in stored["status"]["charges"] if c["jobUID"] == uid]
    assert charge["state"] == "Committed"
    assert float(stored["status"]["spentEpsilon"]) > 0
    wait_for("every child of the federation to go", lambda: not any(
        kube.items(kind, f"ppml.dev/job-uid={uid}")
        for kind in ("pods", "secrets", "configmaps", "services", "jobs", "networkpolicies")),
        300)
