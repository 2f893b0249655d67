"""The Helm chart on devcluster: install, run the DP example under the chart's own RBAC, upgrade,
uninstall.

The operator runs in-cluster: its pod is run by devcluster's node agent with the chart's
ServiceAccount token (projected by the real API server) and the in-cluster config, so any rule
the chart forgot shows up as a 403 in the API server's audit log, which the test reads. People
act under their own identities: the data owner creates the budget, the tenant submits the job,
the viewer looks at both with ``ppml status``; ``kubectl auth can-i`` and real refused requests
check what each role may not do.

The tests in this module run in order and share one installation (module fixtures).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ppml-operator"
EXAMPLE = REPO / "examples" / "private-training" / "digits-dp-sgd.yaml"
RELEASE = "ppml"
SYSTEM = "ppml-system"
SA_USER = f"system:serviceaccount:{SYSTEM}:ppml-operator"
CRDS = (
    "privacybudgets.ppml.dev",
    "privatedatasets.ppml.dev",
    "privatetrainingjobs.ppml.dev",
    "federatedjobs.ppml.dev",
)
USER_ROLES = ("ppml-viewer", "ppml-analyst", "ppml-data-owner")
#: Admission policies kept on uninstall with the CRDs (the ledger outlives the operator).
KEPT_POLICIES = ("ppml-ledger-guard", "ppml-ledger-crd-guard")
RELEASE_POLICIES = ("ppml-job-guard", "ppml-children-guard")
LEDGER_REFUSAL = "its ledger is the only record of the privacy already spent"

EXAMPLE_DOCS = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
BUDGET = next(d for d in EXAMPLE_DOCS if d["kind"] == "PrivacyBudget")
JOB = next(d for d in EXAMPLE_DOCS if d["kind"] == "PrivateTrainingJob")


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class Env:
    """The cluster, helm, and the shared state of this module's run."""

    def __init__(self, cluster: Any) -> None:
        from devcluster.tools import find

        self.cluster = cluster
        self.helm_bin = find(cluster.bin_dir, "helm")
        self.ns = f"t-helm-{secrets.token_hex(3)}"
        self.ns2 = f"{self.ns}-b"  # watched from the upgrade on
        self.state: dict[str, Any] = {}

    def kubectl(
        self, *args: str, user: str | None = None, input: str | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, user=user, input=input, timeout=timeout)

    def ok(
        self, *args: str, user: str | None = None, input: str | None = None, timeout: float = 120.0
    ) -> str:
        p = self.kubectl(*args, user=user, input=input, timeout=timeout)
        assert p.returncode == 0, f"kubectl {' '.join(args)} failed: {p.stderr}"
        return p.stdout

    def json(self, *args: str, user: str | None = None) -> Any:
        return json.loads(self.ok(*args, "-o", "json", user=user))

    def helm(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.helm_bin, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.cluster.env(),
        )

    def kube_version(self) -> str:
        """The API server's version (helm template assumes an old one unless told)."""
        if "kube_version" not in self.state:
            self.state["kube_version"] = self.json("version")["serverVersion"]["gitVersion"]
        return str(self.state["kube_version"])

    def template(self, *args: str) -> str:
        p = self.helm(
            "template",
            RELEASE,
            str(CHART),
            "-n",
            SYSTEM,
            "--kube-version",
            self.kube_version(),
            *args,
        )
        assert p.returncode == 0, p.stderr
        return p.stdout

    def can_i(
        self,
        verb: str,
        resource: str,
        *,
        ns: str | None = None,
        user: str | None = None,
        as_sa: bool = False,
        subresource: str | None = None,
    ) -> bool:
        args = ["auth", "can-i", verb, resource]
        if ns:
            args += ["-n", ns]
        if subresource:
            args.append(f"--subresource={subresource}")
        if as_sa:
            args.append(f"--as={SA_USER}")
        p = self.kubectl(*args, user=user)
        assert p.stdout.strip() in ("yes", "no"), p.stderr
        return p.stdout.strip() == "yes"

    def operator_pods(self) -> list[dict[str, Any]]:
        pods = self.json(
            "get",
            "pods",
            "-n",
            SYSTEM,
            "-l",
            "app.kubernetes.io/name=ppml-operator,app.kubernetes.io/component=operator",
        )
        return [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]

    def diagnostics(self) -> str:
        from devcluster.paths import state_paths

        out = []
        for pod in self.operator_pods():
            log = state_paths().pod_logs / f"{SYSTEM}_{pod['metadata']['name']}_operator.log"
            if log.exists():
                out.append(
                    f"--- {log.name} (tail)\n" + "\n".join(log.read_text().splitlines()[-60:])
                )
        out.append(
            self.kubectl("get", "ptj,pbudget,jobs,pods", "-n", self.ns, "-o", "yaml").stdout[-6000:]
        )
        return "\n".join(out)

    def audit(self, since: float) -> list[dict[str, Any]]:
        """The API server's audit events of the operator's ServiceAccount since ``since``.

        Only this release's ServiceAccount (by UID): tests/integration/api acts under the same
        name, and provokes refusals on purpose.
        """
        from devcluster.paths import state_paths

        sa_uid = self.json("get", "serviceaccount", "ppml-operator", "-n", SYSTEM)["metadata"][
            "uid"
        ]
        events = []
        with open(state_paths().logs / "audit.log", encoding="utf-8") as log:
            for line in log:
                if SA_USER not in line:
                    continue
                e = json.loads(line)
                if e.get("user", {}).get("username") != SA_USER:
                    continue
                if e["user"].get("uid", sa_uid) != sa_uid:
                    continue
                if e.get("stage") != "ResponseComplete":
                    continue
                stamp = datetime.fromisoformat(e["stageTimestamp"].replace("Z", "+00:00"))
                if stamp.timestamp() >= since - 5:
                    events.append(e)
        return events


@pytest.fixture(scope="module")
def env(devcluster: Any) -> Iterator[Env]:
    e = Env(devcluster)
    e.state["t0"] = time.time()
    yield e
    # Leave the shared cluster as we found it: no release, no namespace stuck on finalizers.
    if e.helm("status", RELEASE, "-n", SYSTEM).returncode == 0:
        e.helm("uninstall", RELEASE, "-n", SYSTEM, "--wait", "--timeout", "120s")
    unguard(e)
    for kind in ("ptj", "pbudget"):
        for name in e.kubectl("get", kind, "-n", e.ns, "-o", "name").stdout.split():
            e.kubectl(
                "patch", name, "-n", e.ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
            )
    for ns in (e.ns, e.ns2):
        with contextlib.suppress(Exception):
            e.kubectl("delete", "namespace", ns, "--wait=false")


def unguard(e: Env) -> None:
    """Forget the ledgers on purpose, as the operator guide says: unbind the kept guard."""
    for name in (*KEPT_POLICIES, *RELEASE_POLICIES):
        e.kubectl("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found")
        e.kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found")
    time.sleep(2)  # the admission plugin learns of it through an informer


def manifest(doc: dict[str, Any]) -> str:
    # JSON, not yaml.safe_dump: PyYAML leaves "1e-5" unquoted and kubectl would read a float.
    return json.dumps(doc)


# -- before installing ------------------------------------------------------------------------


def test_helm_lint(env: Env) -> None:
    p = env.helm("lint", "--strict", str(CHART), "--set", f"operator.watchNamespaces={{{env.ns}}}")
    assert p.returncode == 0, p.stdout + p.stderr


def test_namespaces_exist_and_enforce_the_restricted_pod_security_standard(env: Env) -> None:
    for ns in (SYSTEM, env.ns):
        if env.kubectl("get", "namespace", ns).returncode != 0:
            env.ok("create", "namespace", ns)
        env.ok(
            "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"
        )
    # A previous, interrupted run may have left the release behind.
    if env.helm("status", RELEASE, "-n", SYSTEM).returncode == 0:
        p = env.helm("uninstall", RELEASE, "-n", SYSTEM, "--wait")
        assert p.returncode == 0, p.stderr
    for role in USER_ROLES:
        assert env.kubectl("get", "clusterrole", role).returncode != 0, (
            f"ClusterRole {role} exists outside this release; another installation is running"
        )


def test_the_rendered_chart_is_accepted_by_the_api_server(env: Env) -> None:
    rendered = env.template(
        "--set", f"operator.watchNamespaces={{{env.ns}}}", "--set", "grafanaDashboard.enabled=true"
    )
    out = env.ok("apply", "--dry-run=server", "-f", "-", input=rendered)
    kinds = {line.split("/")[0] for line in out.splitlines()}
    for kind in (
        "customresourcedefinition.apiextensions.k8s.io",
        "deployment.apps",
        "serviceaccount",
        "clusterrole.rbac.authorization.k8s.io",
        "clusterrolebinding.rbac.authorization.k8s.io",
        "rolebinding.rbac.authorization.k8s.io",
        "service",
        "configmap",
        "validatingadmissionpolicy.admissionregistration.k8s.io",
        "validatingadmissionpolicybinding.admissionregistration.k8s.io",
    ):
        assert kind in kinds, out


def test_the_operator_deployment_passes_pod_security_admission(env: Env) -> None:
    deployment = env.template("--show-only", "templates/deployment.yaml")
    spec = yaml.safe_load(deployment)["spec"]["template"]["spec"]
    spec.pop("serviceAccountName")  # not created yet; PodSecurity does not look at it
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "psa-probe", "namespace": SYSTEM},
        "spec": spec,
    }
    out = env.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(probe))
    assert out.returncode == 0, out.stderr
    assert "PodSecurity" not in out.stderr, out.stderr


# -- install ----------------------------------------------------------------------------------


def test_helm_install(env: Env) -> None:
    # CRDs applied earlier by other tests (kubectl) are adopted by the release, as Helm documents.
    for crd in CRDS:
        if env.kubectl("get", "crd", crd).returncode == 0:
            env.ok("label", "crd", crd, "app.kubernetes.io/managed-by=Helm", "--overwrite")
            env.ok(
                "annotate",
                "crd",
                crd,
                f"meta.helm.sh/release-name={RELEASE}",
                f"meta.helm.sh/release-namespace={SYSTEM}",
                "--overwrite",
            )
    # So are the admission policies `make demo` applies from the same templates.
    for name in (*KEPT_POLICIES, *RELEASE_POLICIES):
        for kind in ("validatingadmissionpolicy", "validatingadmissionpolicybinding"):
            if env.kubectl("get", kind, name).returncode == 0:
                env.ok(
                    "annotate",
                    kind,
                    name,
                    f"meta.helm.sh/release-name={RELEASE}",
                    f"meta.helm.sh/release-namespace={SYSTEM}",
                    "--overwrite",
                )
    env.state["installed_at"] = time.time()
    p = env.helm(
        "install",
        RELEASE,
        str(CHART),
        "-n",
        SYSTEM,
        "--set",
        f"operator.watchNamespaces={{{env.ns}}}",
        "--set",
        "operator.reconcileIntervalSeconds=2",
        "--wait",
        "--timeout",
        "180s",
    )
    assert p.returncode == 0, p.stderr + "\n" + env.diagnostics()
    assert "ppml status" in p.stdout, "NOTES.txt tells the user what to do next"
    for crd in CRDS:
        env.ok("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    [pod] = env.operator_pods()
    assert pod["spec"]["serviceAccountName"] == "ppml-operator"
    assert pod["status"]["phase"] == "Running"
    env.state["pod"] = pod


def test_operator_service_account_can_do_what_it_needs_and_nothing_more(env: Env) -> None:
    ns = env.ns
    allowed = [
        ("update", "privacybudgets.ppml.dev", ns, "status"),
        ("patch", "privatetrainingjobs.ppml.dev", ns, "status"),
        ("watch", "privatetrainingjobs.ppml.dev", ns, None),
        ("create", "jobs.batch", ns, None),
        ("delete", "pods", ns, None),
        ("create", "pods", ns, None),  # a FederatedJob's SuperLink and SuperNodes
        ("create", "secrets", ns, None),
        ("delete", "secrets", ns, None),
        ("list", "namespaces", None, None),  # watching listed namespaces only
        ("create", "events", ns, None),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", None, None),
    ]
    refused = [
        ("get", "secrets", ns, None),
        ("list", "secrets", ns, None),
        ("patch", "pods", ns, None),
        ("update", "pods", ns, None),
        ("create", "pods", ns, "exec"),
        ("update", "privacybudgets.ppml.dev", ns, None),
        ("delete", "privacybudgets.ppml.dev", ns, None),
        ("create", "jobs.batch", "default", None),  # not a watched namespace
        ("list", "privacybudgets.ppml.dev", "default", None),
        ("create", "clusterroles.rbac.authorization.k8s.io", None, None),
        ("create", "rolebindings.rbac.authorization.k8s.io", ns, None),
        ("impersonate", "users", None, None),
        ("list", "nodes", None, None),
    ]
    for verb, res, where, sub in allowed:
        assert env.can_i(verb, res, ns=where, as_sa=True, subresource=sub), (verb, res, where, sub)
    for verb, res, where, sub in refused:
        assert not env.can_i(verb, res, ns=where, as_sa=True, subresource=sub), (verb, res, where)


def test_people_get_their_roles_in_the_namespace(env: Env) -> None:
    for role, group in (
        ("ppml-analyst", "ppml:tenants"),
        ("ppml-data-owner", "ppml:data-owners"),
        ("ppml-viewer", "ppml:viewers"),
    ):
        env.ok(
            "create", "rolebinding", role, "-n", env.ns, f"--clusterrole={role}", f"--group={group}"
        )
    table = [
        # (user, verb, resource, subresource, allowed)
        ("tenant", "create", "privatetrainingjobs.ppml.dev", None, True),
        ("tenant", "create", "federatedjobs.ppml.dev", None, True),
        ("tenant", "get", "privacybudgets.ppml.dev", None, True),
        ("tenant", "patch", "privacybudgets.ppml.dev", None, False),
        ("tenant", "update", "privacybudgets.ppml.dev", None, False),
        ("tenant", "patch", "privacybudgets.ppml.dev", "status", False),
        ("tenant", "patch", "privatetrainingjobs.ppml.dev", "status", False),
        ("data-owner", "create", "privacybudgets.ppml.dev", None, True),
        ("data-owner", "patch", "privacybudgets.ppml.dev", None, True),
        ("data-owner", "update", "privacybudgets.ppml.dev", "status", False),
        ("data-owner", "create", "privatetrainingjobs.ppml.dev", None, False),
        ("viewer", "list", "privacybudgets.ppml.dev", None, True),
        ("viewer", "get", "privatetrainingjobs.ppml.dev", "status", True),
        ("viewer", "create", "privatetrainingjobs.ppml.dev", None, False),
        ("viewer", "delete", "privacybudgets.ppml.dev", None, False),
    ]
    wrong = [
        row
        for row in table
        if env.can_i(row[1], row[2], ns=env.ns, user=row[0], subresource=row[3]) is not row[4]
    ]
    assert not wrong


# -- the DP example, run by the in-cluster operator ---------------------------------------------


def test_the_data_owner_creates_the_budget_and_the_tenant_submits_the_job(env: Env) -> None:
    env.ok("apply", "-n", env.ns, "-f", "-", user="data-owner", input=manifest(BUDGET))
    own = {
        **BUDGET,
        "metadata": {"name": "tenant-made"},
        "spec": {**BUDGET["spec"], "epsilon": "50"},
    }
    refused = env.kubectl("create", "-n", env.ns, "-f", "-", user="tenant", input=manifest(own))
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused.stderr
    env.ok("apply", "-n", env.ns, "-f", "-", user="tenant", input=manifest(JOB))


def test_the_job_completes_and_its_cost_is_committed_to_the_budget(env: Env) -> None:
    name = JOB["metadata"]["name"]
    p = env.kubectl(
        "wait",
        "--for=condition=Complete",
        f"ptj/{name}",
        "-n",
        env.ns,
        "--timeout=600s",
        timeout=620,
    )
    assert p.returncode == 0, p.stderr + "\n" + env.diagnostics()
    job = env.json("get", "ptj", name, "-n", env.ns)
    budget = env.json("get", "pbudget", BUDGET["metadata"]["name"], "-n", env.ns)
    [charge] = budget["status"]["charges"]
    assert charge["jobUID"] == job["metadata"]["uid"]
    assert charge["state"] == "Committed"
    assert float(budget["status"]["spentEpsilon"]) > 0
    assert float(job["status"]["privacy"]["epsilon"]) <= float(
        JOB["spec"]["privacy"]["targetEpsilon"]
    )
    env.state["budget"] = budget


def test_the_ledger_was_written_by_the_operators_service_account_without_a_single_403(
    env: Env,
) -> None:
    events = env.audit(env.state["installed_at"])
    for e in events:
        e.setdefault("objectRef", {})  # discovery requests (non-resource URLs) have none
    ledger = [
        e
        for e in events
        if e["objectRef"].get("resource") == "privacybudgets"
        and e["objectRef"].get("subresource") == "status"
        and e["objectRef"].get("namespace") == env.ns
        and e["verb"] == "update"
    ]
    assert ledger, "no PUT privacybudgets/status by the operator's ServiceAccount"
    forbidden = {
        (e["verb"], e["objectRef"].get("resource", ""), e["objectRef"].get("subresource", ""))
        for e in events
        if e.get("responseStatus", {}).get("code") == 403
    }
    assert not forbidden, sorted(forbidden)


def test_people_are_refused_what_their_roles_do_not_allow(env: Env) -> None:
    name = BUDGET["metadata"]["name"]
    raise_epsilon = env.kubectl(
        "patch",
        "pbudget",
        name,
        "-n",
        env.ns,
        "--type=merge",
        "-p",
        '{"spec":{"epsilon":"100"}}',
        user="tenant",
    )
    assert raise_epsilon.returncode != 0 and "forbidden" in raise_epsilon.stderr.lower()
    rewrite_ledger = env.kubectl(
        "patch",
        "pbudget",
        name,
        "-n",
        env.ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"spentEpsilon":"0"}}',
        user="data-owner",
    )
    assert rewrite_ledger.returncode != 0 and "forbidden" in rewrite_ledger.stderr.lower()
    budget = env.json("get", "pbudget", name, "-n", env.ns)
    assert budget["spec"]["epsilon"] == BUDGET["spec"]["epsilon"]
    assert budget["status"]["spentEpsilon"] == env.state["budget"]["status"]["spentEpsilon"]


def test_the_charged_budget_cannot_be_deleted_nor_the_jobs_finalizer_stripped(env: Env) -> None:
    """The chart's admission policies, bound cluster-wide, against the people's own identities."""
    budget = BUDGET["metadata"]["name"]
    for user in ("data-owner", None):  # None: the cluster admin, who bypasses RBAC only
        p = env.kubectl("delete", "pbudget", budget, "-n", env.ns, "--wait=false", user=user)
        assert p.returncode != 0 and LEDGER_REFUSAL in p.stderr, (user, p.stderr)
    p = env.kubectl("delete", "pbudget", budget, "-n", env.ns, user="tenant")
    assert p.returncode != 0 and "forbidden" in p.stderr.lower(), p.stderr
    job = JOB["metadata"]["name"]
    finalizers = env.json("get", "ptj", job, "-n", env.ns)["metadata"].get("finalizers", [])
    assert "ppml.dev/finalizer" in finalizers, "kopf keeps it until the job is deleted"
    strip = env.kubectl(
        "patch",
        "ptj",
        job,
        "-n",
        env.ns,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
        user="tenant",
    )
    assert strip.returncode != 0, "the tenant stripped the job's finalizer"
    assert "may remove the finalizer ppml.dev/finalizer" in strip.stderr, strip.stderr
    pods = env.json("get", "pods", "-n", env.ns, "-l", f"ppml.dev/job-name={job}")["items"]
    assert pods, "the job's pods are kept for the data owner"
    relabel = env.kubectl(
        "label",
        "pod",
        pods[0]["metadata"]["name"],
        "-n",
        env.ns,
        "ppml.dev/job-uid=forged",
        "--overwrite",
    )
    assert relabel.returncode != 0 and "ppml.dev/ labels" in relabel.stderr, relabel.stderr
    after = env.json("get", "pbudget", budget, "-n", env.ns)
    assert after["status"]["spentEpsilon"] == env.state["budget"]["status"]["spentEpsilon"]


def test_resyncing_unchanged_manifests_never_charges_again(env: Env) -> None:
    before = env.state["budget"]["status"]
    for _ in range(2):  # what a GitOps controller does every interval
        env.ok("apply", "-n", env.ns, "-f", "-", user="data-owner", input=manifest(BUDGET))
        env.ok("apply", "-n", env.ns, "-f", "-", user="tenant", input=manifest(JOB))
    time.sleep(8)  # several reconcile intervals (2 s) of the operator
    after = env.json("get", "pbudget", BUDGET["metadata"]["name"], "-n", env.ns)["status"]
    assert after["spentEpsilon"] == before["spentEpsilon"]
    assert [c["jobUID"] for c in after["charges"]] == [c["jobUID"] for c in before["charges"]]
    job = env.json("get", "ptj", JOB["metadata"]["name"], "-n", env.ns)
    complete = next(c for c in job["status"]["conditions"] if c["type"] == "Complete")
    assert complete["status"] == "True"
    assert job["status"]["observedGeneration"] == job["metadata"]["generation"]


def test_the_metrics_endpoint_reports_the_budget(env: Env) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    spent = float(env.state["budget"]["status"]["spentEpsilon"])
    budget = BUDGET["metadata"]["name"]

    def scrape() -> tuple[dict[str, Any], list[Any], str] | None:
        [pod] = env.operator_pods()
        url = f"http://{pod['status']['podIP']}:8081/metrics"
        text = no_proxy.open(url, timeout=10).read().decode()
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
        found = [
            s
            for s in samples
            if s.name == "ppml_budget_epsilon"
            and s.labels.get("budget") == budget
            and s.labels.get("namespace") == env.ns
            and s.labels.get("state") == "spent"
        ]
        return (pod, samples, text) if found else None

    # Metrics live in the operator's memory: after a container restart (the node agent restarts
    # containers when it restarts itself) the budget's timer republishes them within its interval.
    pod, samples, text = wait_for("the budget's metrics", scrape, timeout=60, interval=2)

    def value(name: str, **labels: str) -> float | None:
        hits = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
        return hits[0] if hits else None

    got = value("ppml_budget_epsilon", namespace=env.ns, budget=budget, state="spent")
    assert got == pytest.approx(spent), text[:3000]
    total = value("ppml_budget_epsilon", namespace=env.ns, budget=budget, state="total")
    assert total == pytest.approx(float(BUDGET["spec"]["epsilon"]))
    # Counters start from zero in a restarted process: expect the admission only from a process
    # that was already running when the job was admitted.
    [status] = pod["status"]["containerStatuses"]
    started = status["state"]["running"]["startedAt"]
    job = env.json("get", "ptj", JOB["metadata"]["name"], "-n", env.ns)
    admitted_at = next(c for c in job["status"]["conditions"] if c["type"] == "Admitted")
    if started < admitted_at["lastTransitionTime"]:  # RFC 3339 UTC strings sort by time
        admitted = value("ppml_admissions_total", namespace=env.ns, kind="PrivateTrainingJob")
        assert admitted is not None and admitted >= 1, text[:3000]


def test_ppml_status_and_history_work_with_viewer_rights(env: Env, tmp_path: Path) -> None:
    from ppml_operator.cli import main

    kubeconfig = str(env.cluster.user_kubeconfig("viewer"))
    proc = subprocess.run(
        [
            str(REPO / "bin" / "kubectl-ppml"),
            "status",
            "-n",
            env.ns,
            "--kubeconfig",
            kubeconfig,
            "--width",
            "140",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{env.ns}/{BUDGET['metadata']['name']}" in proc.stdout
    assert "█" in proc.stdout
    line = next(x for x in proc.stdout.splitlines() if JOB["metadata"]["name"] in x)
    assert "Complete" in line and "100%" in line
    png = tmp_path / "history.png"
    assert (
        main(
            [
                "budget",
                "history",
                BUDGET["metadata"]["name"],
                "-n",
                env.ns,
                "--kubeconfig",
                kubeconfig,
                "--plot",
                str(png),
            ]
        )
        == 0
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- upgrade and uninstall --------------------------------------------------------------------


def test_helm_upgrade_replaces_the_operator_and_keeps_the_ledger(env: Env) -> None:
    old = env.state["pod"]["metadata"]["uid"]
    env.ok("create", "namespace", env.ns2)
    p = env.helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        SYSTEM,
        "--reuse-values",
        "--set",
        "operator.logLevel=debug",
        "--set",
        f"operator.watchNamespaces={{{env.ns},{env.ns2}}}",
        "--wait",
        "--timeout",
        "180s",
    )
    assert p.returncode == 0, p.stderr + "\n" + env.diagnostics()
    pods = wait_for(
        "one operator pod after the upgrade",
        lambda: (
            [
                x
                for x in env.operator_pods()
                if x["metadata"]["uid"] != old and x["status"].get("phase") == "Running"
            ]
            or None
        ),
        120,
    )
    assert len(env.operator_pods()) == 1, "Recreate: the old pod is gone before the new one runs"
    [container] = pods[0]["spec"]["containers"]
    assert "--verbose" in container["args"]
    assert f"--namespace={env.ns2}" in container["args"]
    binding = env.json("get", "rolebinding", "ppml-operator", "-n", env.ns2)
    assert binding["roleRef"]["name"] == "ppml-operator-namespaced"
    assert env.can_i("create", "jobs.batch", ns=env.ns2, as_sa=True)
    history = env.helm("history", RELEASE, "-n", SYSTEM, "-o", "json")
    assert [r["revision"] for r in json.loads(history.stdout)] == [1, 2]
    time.sleep(6)  # the new operator resumes every object
    budget = env.json("get", "pbudget", BUDGET["metadata"]["name"], "-n", env.ns)
    assert budget["status"]["spentEpsilon"] == env.state["budget"]["status"]["spentEpsilon"]
    assert len(budget["status"]["charges"]) == 1


def test_helm_uninstall_removes_the_operator_and_keeps_crds_and_ledgers(env: Env) -> None:
    p = env.helm("uninstall", RELEASE, "-n", SYSTEM, "--wait", "--timeout", "120s")
    assert p.returncode == 0, p.stderr
    assert "kept due to the resource policy" in p.stdout
    wait_for("the operator pod to go", lambda: not env.operator_pods(), 60)
    assert env.kubectl("get", "deployment", "ppml-operator", "-n", SYSTEM).returncode != 0
    assert env.kubectl("get", "serviceaccount", "ppml-operator", "-n", SYSTEM).returncode != 0
    for role in (*USER_ROLES, "ppml-operator-cluster", "ppml-operator-namespaced"):
        assert env.kubectl("get", "clusterrole", role).returncode != 0, role
    for ns in (env.ns, env.ns2):
        assert env.kubectl("get", "rolebinding", "ppml-operator", "-n", ns).returncode != 0, ns
    for crd in CRDS:
        assert env.kubectl("get", "crd", crd).returncode == 0, f"{crd} was deleted"
    budget = env.json("get", "pbudget", BUDGET["metadata"]["name"], "-n", env.ns)
    assert budget["status"]["spentEpsilon"] == env.state["budget"]["status"]["spentEpsilon"]
    # The ledger guard stays with the ledgers; the operator's own guards go with the operator.
    for name in KEPT_POLICIES:
        for kind in ("validatingadmissionpolicy", "validatingadmissionpolicybinding"):
            assert env.kubectl("get", kind, name).returncode == 0, f"{kind} {name} was deleted"
    for name in RELEASE_POLICIES:
        assert env.kubectl("get", "validatingadmissionpolicy", name).returncode != 0, name
    p = env.kubectl("delete", "pbudget", BUDGET["metadata"]["name"], "-n", env.ns)
    assert p.returncode != 0 and LEDGER_REFUSAL in p.stderr, p.stderr
