"""Parties on devcluster: data owners and an analyst, each in their own namespace (issue 11).

The end-to-end suites that cross the privacy boundary (``tests/e2e/test_tenant_attacks.py``,
``tests/e2e/test_federated_across_owners.py``) set up the same world:

- one namespace per data owner and one for the analyst (``ml-team-<run>``), labelled with the
  run so that the chart's ValidatingAdmissionPolicies can be bound to exactly them;
- the analyst: a ServiceAccount holding only the chart's ``ppml-analyst`` role in ml-team, and
  an engineer with Kubernetes' ordinary ``edit`` there (to run the documented evaluation of
  the delivered model: ``ppml-analyst`` alone runs no pods); both act with tokens from the
  TokenRequest API, so every 403 is the real API server's;
- the operator as ``python -m ppml_operator``, with a token of the chart's operator identity
  (ServiceAccount ``ppml-system/ppml-operator``, which the chart's policies trust), watching
  the namespaces a suite names.

Only the end-to-end tests import this module (it imports devcluster's client).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.kubeapi import ApiError, Client
from devcluster.paths import apiserver_url

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ppml-operator"
POLICY_FILES = ("templates/admission-ledger-guard.yaml", "templates/admission-job-guard.yaml")
PPML = "/apis/ppml.dev/v1alpha1/namespaces/{ns}/{res}"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
SYSTEM = "ppml-system"
"""The operator's namespace (the chart's default, and ``RenderSettings.operator_namespace``)."""
RUNTIME_IMAGE = "ghcr.io/ppml-dev/ppml-runtime:0.1.0"
RESTRICTED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
              "runAsNonRoot": True, "runAsUser": 65532,
              "seccompProfile": {"type": "RuntimeDefault"}}
"""A container securityContext meeting the ``restricted`` Pod Security Standard."""

Obj = dict[str, Any]


@dataclass
class Parties:
    """One run's namespaces, identities, the operator, and what to remove afterwards."""

    cluster: Any
    run: str
    admin: Client
    owners: tuple[str, ...] = ()
    others: tuple[str, ...] = ()
    """More analysts' namespaces (their teams played by the admin)."""
    analyst: Client | None = None
    engineer: Client | None = None
    operator: subprocess.Popen[bytes] | None = None
    operator_api: Client | None = None
    log: Path | None = None
    installed: list[str] = field(default_factory=list)
    created_operator_sa: bool = False
    job_resources: tuple[str, ...] = ("privatetrainingjobs",)

    @property
    def ml_team(self) -> str:
        return f"ml-team-{self.run}"

    @property
    def namespaces(self) -> tuple[str, ...]:
        """The owners' namespaces and the analysts'."""
        return (*self.owners, self.ml_team, *self.others)

    def name(self, base: str) -> str:
        return f"{base}-{self.run}"

    def path(self, ns: str, res: str, name: str = "") -> str:
        base = PPML.format(ns=ns, res=res)
        return f"{base}/{name}" if name else base

    def job_path(self, name: str = "", res: str | None = None) -> str:
        return self.path(self.ml_team, res or self.job_resources[0], name)


def helm_template(cluster: Any, *show: str) -> list[Obj]:
    """Render the chart (only the ``show`` templates, if any) as the operator's release."""
    from devcluster.tools import find

    args = [find(cluster.bin_dir, "helm"), "template", "ppml", str(CHART), "-n", SYSTEM,
            "--kube-version", "1.34.4"]
    for s in show:
        args += ["--show-only", s]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60, env=cluster.env())
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def token_for(admin: Client, ns: str, sa: str) -> str:
    """Return a two-hour token of ServiceAccount ``ns/sa`` (TokenRequest API)."""
    answer = admin.post(f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 7200}})
    return str(answer["status"]["token"])


def ensure(admin: Client, path: str, body: Obj) -> None:
    """Create an object unless it exists."""
    with contextlib.suppress(ApiError):
        admin.post(path, body)


def refused(call: Callable[[], Any], status: int, *fragments: str) -> str:
    """Assert that ``call`` is refused with ``status`` and a message holding ``fragments``."""
    with pytest.raises(ApiError) as err:
        call()
    body = err.value.body if isinstance(err.value.body, dict) else {}
    message = str(body.get("message", ""))
    assert err.value.status == status, (err.value.status, message)
    for fragment in fragments:
        assert fragment in message, message
    return message


def _service_account_with(p: Parties, ns: str, sa: str, cluster_role: str) -> Client:
    p.admin.post(f"/api/v1/namespaces/{ns}/serviceaccounts", {
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}})
    p.admin.post(f"{RBAC}/namespaces/{ns}/rolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": sa},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": cluster_role},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]})
    return Client(apiserver_url(), p.cluster.paths.pki / "ca.crt",
                  token=token_for(p.admin, ns, sa))


def set_up(p: Parties, *, restricted: Iterable[str] = ()) -> None:
    """Create the namespaces, the chart's policies bound to them, the analyst and the engineer.

    Parameters
    ----------
    p
        The parties (``owners`` set; the cluster has the CRDs).
    restricted
        Namespaces that enforce the ``restricted`` Pod Security Standard.

    """
    ensure(p.admin, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": SYSTEM}})
    enforce = set(restricted)
    for ns in p.namespaces:
        labels = {"ppml-party-test": p.run}
        if ns in enforce:
            labels["pod-security.kubernetes.io/enforce"] = "restricted"
        p.admin.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": ns, "labels": labels}})
    selector = {"matchLabels": {"ppml-party-test": p.run}}
    for doc in helm_template(p.cluster, *POLICY_FILES):
        doc["metadata"]["name"] = p.name(doc["metadata"]["name"])
        if doc["kind"] == "ValidatingAdmissionPolicyBinding":
            doc["spec"]["policyName"] = p.name(doc["spec"]["policyName"])
            doc["spec"]["matchResources"] = {"namespaceSelector": selector}
        path = "/apis/admissionregistration.k8s.io/v1/" + (
            "validatingadmissionpolicies" if doc["kind"] == "ValidatingAdmissionPolicy"
            else "validatingadmissionpolicybindings")
        p.admin.post(path, doc)
        p.installed.append(f"{path}/{doc['metadata']['name']}")
    roles = {d["metadata"]["name"]: d
             for d in helm_template(p.cluster, "templates/rbac-user-roles.yaml")}
    analyst_role = roles["ppml-analyst"]
    analyst_role["metadata"] = {"name": p.name("ppml-analyst")}
    p.admin.post(f"{RBAC}/clusterroles", analyst_role)
    p.installed.append(f"{RBAC}/clusterroles/{p.name('ppml-analyst')}")
    # The analyst: ppml-analyst in ml-team, nothing else.
    p.analyst = _service_account_with(p, p.ml_team, "analyst", p.name("ppml-analyst"))
    # A team member with Kubernetes' ordinary "edit" in ml-team only (nothing private is
    # there): runs the documented evaluation of the delivered model.
    p.engineer = _service_account_with(p, p.ml_team, "engineer", "edit")
    # The operator: the identity the chart's policies trust, with the rights to run jobs.
    try:
        p.admin.post(f"/api/v1/namespaces/{SYSTEM}/serviceaccounts", {
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "ppml-operator"}})
        p.created_operator_sa = True
    except ApiError as err:  # the chart's own, when it is installed
        if err.status != 409:
            raise
    p.admin.post(f"{RBAC}/clusterrolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": p.name("party-test-operator")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "ppml-operator", "namespace": SYSTEM}]})
    p.installed.append(f"{RBAC}/clusterrolebindings/{p.name('party-test-operator')}")


def start_operator(p: Parties, workdir: Path, namespaces: Sequence[str]) -> None:
    """Start the operator as the chart's operator identity, watching ``namespaces``."""
    kubeconfig = workdir / "kubeconfig"
    token = token_for(p.admin, SYSTEM, "ppml-operator")
    p.operator_api = Client(apiserver_url(), p.cluster.paths.pki / "ca.crt", token=token)
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "dc", "cluster": {
            "server": apiserver_url(),
            "certificate-authority": str(p.cluster.paths.pki / "ca.crt")}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "dc", "user": "operator"}}]}))
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1",
           "PPML_RECONCILE_INTERVAL": "2", "PPML_OPERATOR_NAMESPACE": SYSTEM}
    env.pop("PPML_TRAINER_COMMAND", None)
    p.log = workdir / "operator.log"
    args = [arg for ns in namespaces for arg in ("-n", ns)]
    with open(p.log, "wb") as out:
        p.operator = subprocess.Popen([sys.executable, "-m", "ppml_operator", *args],
                                      env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)


def tear_down(p: Parties) -> None:
    """Delete the jobs while the operator runs, stop it, remove the policies and namespaces."""
    if p.operator is not None:
        # The operator clears the jobs' finalizers and their children in other namespaces.
        for ns in (p.ml_team, *p.others):
            for res in p.job_resources:
                with contextlib.suppress(ApiError):
                    for job in p.admin.get(p.path(ns, res))["items"]:
                        p.admin.delete(p.path(ns, res, job["metadata"]["name"]))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(ApiError):
                if not any(p.admin.get(p.job_path(res=res))["items"]
                           for res in p.job_resources):
                    break
            time.sleep(1)
        p.operator.terminate()
        try:
            p.operator.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.operator.kill()
        if p.log is not None:
            print(p.log.read_text()[-6000:])
    for path in reversed(p.installed):  # the guards go first: the namespaces can then go
        with contextlib.suppress(ApiError):
            p.admin.delete(path)
    for ns in reversed(p.namespaces):
        for res in (*p.job_resources, "privacybudgets"):
            with contextlib.suppress(ApiError):
                for obj in p.admin.get(p.path(ns, res))["items"]:
                    p.admin.patch(p.path(ns, res, obj["metadata"]["name"]),
                                  {"metadata": {"finalizers": None}})
        with contextlib.suppress(ApiError):
            p.admin.delete(f"/api/v1/namespaces/{ns}")
    if p.created_operator_sa:  # a later `helm install` must be able to own it
        with contextlib.suppress(ApiError):
            p.admin.delete(f"/api/v1/namespaces/{SYSTEM}/serviceaccounts/ppml-operator")


def wait_for_job(p: Parties, name: str, done: Callable[[Obj], bool], timeout: float = 120,
                 res: str | None = None) -> Obj:
    """Poll the analyst's job until ``done``; fail if the operator exits or time runs out."""
    deadline = time.monotonic() + timeout
    job: Obj = {}
    while time.monotonic() < deadline:
        assert p.operator is not None and p.operator.poll() is None, "the operator exited"
        job = p.admin.get(p.job_path(name, res))
        if done(job):
            return job
        time.sleep(2)
    pytest.fail(f"{name}: not there after {timeout}s: {json.dumps(job.get('status'))}")


def probe_port(p: Parties, ns: str, labels: dict[str, str], ip: str, port: int,
               as_: Client | None = None) -> str:
    """From a new pod in ``ns`` wearing ``labels``, try a TCP connect; return what it printed.

    ``CONNECTED`` or ``REFUSED <error>`` (devcluster's node agent enforces NetworkPolicies).
    The pod is created by ``as_`` (default the admin): only the operator's identity may set
    ``ppml.dev/`` labels where the chart's children guard is bound.
    """
    name = f"probe-{secrets.token_hex(3)}"
    code = ("import socket,sys\ns=socket.socket();s.settimeout(3)\n"
            f"try:\n  s.connect(({ip!r},{port}));print('CONNECTED')\n"
            "except OSError as e:\n  print('REFUSED',e)\n")
    (as_ or p.admin).post(f"/api/v1/namespaces/{ns}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                 "securityContext": {"runAsNonRoot": True, "seccompProfile": {
                     "type": "RuntimeDefault"}},
                 "containers": [{"name": "probe", "image": "python:3.11",
                                 "command": ["python", "-c", code],
                                 "securityContext": RESTRICTED}]}})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pod = p.admin.get(f"/api/v1/namespaces/{ns}/pods/{name}")
            if pod["status"].get("phase") in ("Succeeded", "Failed"):
                return str(p.cluster.kubectl("logs", name, "-n", ns).stdout)
            time.sleep(1)
        pytest.fail("the probe pod did not finish")
    finally:
        with contextlib.suppress(ApiError):
            p.admin.delete(f"/api/v1/namespaces/{ns}/pods/{name}")


def kubectl_as(p: Parties, sa: str) -> list[str]:
    """Return a kubectl command line acting as ServiceAccount ``ml-team/sa``."""
    from devcluster.tools import find

    return [find(p.cluster.bin_dir, "kubectl"), "--server", apiserver_url(),
            "--certificate-authority", str(p.cluster.paths.pki / "ca.crt"),
            "--token", token_for(p.admin, p.ml_team, sa)]


def evaluate_delivered_model(p: Parties, claim: str, path: str, name: str = "evaluate",
                             timeout: float = 180) -> Obj:
    """As the engineer, load the delivered model in ml-team and measure it on public digits.

    The documented evaluation (``examples/two-party/evaluate.yaml``): a Job running
    ``python -m ppml_runtime evaluate-model`` with the model's claim mounted read-only.

    Returns
    -------
    dict
        What it printed last (``{"accuracy": ..., ...}``).

    """
    assert p.engineer is not None
    evaluate = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "evaluate", "image": RUNTIME_IMAGE,
                            "command": ["python", "-m", "ppml_runtime", "evaluate-model",
                                        "--model", f"/models/{path}", "--builtin", "Digits"],
                            "volumeMounts": [{"name": "models", "mountPath": "/models",
                                              "readOnly": True}]}],
            "volumes": [{"name": "models", "persistentVolumeClaim": {
                "claimName": claim, "readOnly": True}}]}}}}
    p.engineer.post(f"/apis/batch/v1/namespaces/{p.ml_team}/jobs", evaluate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = p.engineer.get(f"/apis/batch/v1/namespaces/{p.ml_team}/jobs/{name}")
        if any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (ev.get("status") or {}).get("conditions") or []):
            break
        time.sleep(2)
    logs = subprocess.run([*kubectl_as(p, "engineer"), "logs", f"job/{name}", "-n", p.ml_team],
                          capture_output=True, text=True, timeout=60)
    assert logs.returncode == 0, logs.stderr
    measured: Obj = json.loads(logs.stdout.strip().splitlines()[-1])
    return measured


def owner_events(p: Parties, ns: str, reason: str, timeout: float = 30) -> list[Obj]:
    """Return the events of ``reason`` in ``ns``, waiting a moment for the first."""
    deadline = time.monotonic() + timeout
    while True:
        events = [e for e in p.admin.get(f"/api/v1/namespaces/{ns}/events")["items"]
                  if e.get("reason") == reason]
        if events or time.monotonic() > deadline:
            return events
        time.sleep(1)
