"""The chart's admission policies and party roles on the real API server, with real identities.

The chart's ValidatingAdmissionPolicies and its roles for people are rendered with helm and
installed as they are, except for names made unique to this run and bindings narrowed, by a
namespace selector, to this run's namespaces (the cluster is shared with other tests). Each party
is a ServiceAccount acting with a token from the TokenRequest API:

- ``operator``: trusted by the policies as the chart's operator (the chart is rendered into the
  namespace that holds it), with a Role to write budget status, patch jobs and create pods;
- ``analyst``: ``ppml-analyst`` in ``ml-team``;
- ``owner``: ``ppml-data-owner`` in ``clinic``;
- ``viewer``: ``ppml-viewer`` in ``clinic``.

No operator runs: the ledgers are written as the operator would write them, so every refusal
below is the API server's own (403 from RBAC, or the policy's message).
"""

from __future__ import annotations

import contextlib
import copy
import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.kubeapi import ApiError, Client
from devcluster.paths import apiserver_url

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "ppml-operator"
EXAMPLE = [
    d
    for d in yaml.safe_load_all(
        (REPO / "examples" / "private-training" / "digits-dp-sgd.yaml").read_text()
    )
    if d
]
JOB = next(d for d in EXAMPLE if d["kind"] == "PrivateTrainingJob")
BUDGET = next(d for d in EXAMPLE if d["kind"] == "PrivacyBudget")
POLICY_FILES = ("templates/admission-ledger-guard.yaml", "templates/admission-job-guard.yaml")
ROLES = ("ppml-analyst", "ppml-data-owner", "ppml-viewer")
FINALIZER = "ppml.dev/finalizer"
PPML = "/apis/ppml.dev/v1alpha1/namespaces/{ns}/{res}"
LEDGER_REFUSAL = "its ledger is the only record of the privacy already spent"


def charge(uid: str, state: str, epsilon: str = "0.5") -> dict[str, Any]:
    return {
        "jobUID": uid,
        "jobKind": "PrivateTrainingJob",
        "jobName": f"job-{uid}",
        "state": state,
        "epsilon": epsilon,
        "events": [],
    }


@dataclass
class World:
    """This run's namespaces, identities and rendered objects."""

    cluster: Any
    run: str
    admin: Client
    clients: dict[str, Client] = field(default_factory=dict)
    installed: list[tuple[str, str]] = field(default_factory=list)  # (path, name)

    @property
    def clinic(self) -> str:
        return f"guard-{self.run}-clinic"

    @property
    def ml_team(self) -> str:
        return f"guard-{self.run}-ml-team"

    @property
    def doomed(self) -> str:
        return f"guard-{self.run}-doomed"

    #: The chart's default release namespace: its ServiceAccount ppml-operator is the operator
    #: trusted by these policies, and by any chart-installed ones on the cluster too (a
    #: `make demo` left running), which would otherwise refuse this test's operator.
    system = "ppml-system"
    created_operator_sa: bool = False

    def name(self, base: str) -> str:
        return f"{base}-{self.run}"

    def as_(self, who: str) -> Client:
        return self.admin if who == "admin" else self.clients[who]

    # -- budgets ---------------------------------------------------------------------------

    def budget(
        self,
        ns: str,
        name: str,
        charges: list[dict[str, Any]],
        writer: str = "operator",
        **status: Any,
    ) -> str:
        """Create a budget and write its ledger as the operator does (PUT .../status)."""
        path = PPML.format(ns=ns, res="privacybudgets")
        body = copy.deepcopy(BUDGET)
        body["metadata"] = {"name": name}
        self.admin.post(path, body)
        obj = self.admin.get(f"{path}/{name}")
        spent = status.pop(
            "spentEpsilon",
            str(sum(float(c["epsilon"]) for c in charges if c["state"] == "Committed")),
        )
        obj["status"] = {"charges": charges, "spentEpsilon": spent, **status}
        self.as_(writer).put(f"{path}/{name}/status", obj)
        return f"{path}/{name}"


def refused(call: Callable[[], Any], status: int, *fragments: str) -> str:
    """Run ``call``, expect an ApiError with ``status`` and a message with every fragment."""
    with pytest.raises(ApiError) as err:
        call()
    message = str(err.value.body.get("message", "")) if isinstance(err.value.body, dict) else ""
    assert err.value.status == status, (err.value.status, message)
    for fragment in fragments:
        assert fragment in message, message
    return message


def forbidden_by_rbac(call: Callable[[], Any]) -> None:
    message = refused(call, 403, "cannot")
    assert "ValidatingAdmissionPolicy" not in message, message


def helm_template(cluster: Any, namespace: str, *show: str) -> list[dict[str, Any]]:
    from devcluster.tools import find

    args = [find(cluster.bin_dir, "helm"), "template", "ppml", str(CHART), "-n", namespace]
    args += ["--kube-version", "1.34.4"]
    for s in show:
        args += ["--show-only", s]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60, env=cluster.env())
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def token_for(admin: Client, ns: str, sa: str) -> str:
    answer = admin.post(
        f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    return str(answer["status"]["token"])


@pytest.fixture(scope="module")
def world(devcluster: Any) -> Iterator[World]:
    applied = devcluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds")
    )
    assert applied.returncode == 0, applied.stderr
    devcluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/privacybudgets.ppml.dev",
        "crd/privatetrainingjobs.ppml.dev",
        "--timeout=60s",
    )
    w = World(devcluster, secrets.token_hex(3), devcluster.api())
    selector = {"matchLabels": {"ppml-guard-test": w.run}}
    try:
        with contextlib.suppress(ApiError):  # it may exist (a chart installed, a demo)
            w.admin.post(
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": w.system}},
            )
        for ns in (w.clinic, w.ml_team, w.doomed):
            w.admin.post(
                "/api/v1/namespaces",
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": ns, "labels": {"ppml-guard-test": w.run}},
                },
            )
        # The policies, trusting the ServiceAccount ppml-operator of ppml-system as the operator.
        for doc in helm_template(devcluster, w.system, *POLICY_FILES):
            doc["metadata"]["name"] = w.name(doc["metadata"]["name"])
            if doc["kind"] == "ValidatingAdmissionPolicyBinding":
                doc["spec"]["policyName"] = w.name(doc["spec"]["policyName"])
                doc["spec"]["matchResources"] = {"namespaceSelector": selector}
            path = "/apis/admissionregistration.k8s.io/v1/" + (
                "validatingadmissionpolicies"
                if doc["kind"] == "ValidatingAdmissionPolicy"
                else "validatingadmissionpolicybindings"
            )
            w.admin.post(path, doc)
            w.installed.append((path, doc["metadata"]["name"]))
        # The party roles, as rendered, under this run's names.
        roles = {
            d["metadata"]["name"]: d
            for d in helm_template(devcluster, w.system, "templates/rbac-user-roles.yaml")
        }
        assert set(roles) == set(ROLES)
        for name in ROLES:
            role = roles[name]
            role["metadata"] = {"name": w.name(name)}
            w.admin.post("/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
            w.installed.append(("/apis/rbac.authorization.k8s.io/v1/clusterroles", w.name(name)))
        operator_role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": w.name("guard-test-operator")},
            "rules": [
                {
                    "apiGroups": ["ppml.dev"],
                    "resources": ["privacybudgets/status"],
                    "verbs": ["get", "update", "patch"],
                },
                {
                    "apiGroups": ["ppml.dev"],
                    "resources": ["privatetrainingjobs"],
                    "verbs": ["get", "patch"],
                },
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "create", "delete"]},
            ],
        }
        w.admin.post("/apis/rbac.authorization.k8s.io/v1/clusterroles", operator_role)
        w.installed.append(
            ("/apis/rbac.authorization.k8s.io/v1/clusterroles", w.name("guard-test-operator"))
        )
        parties = {
            # who: (home namespace, [(namespace, cluster role)])
            # The operator's rights are cluster-wide (a ClusterRoleBinding, below), so that they
            # outlive the RoleBindings of a namespace being deleted.
            "operator": (w.system, []),
            "analyst": (w.ml_team, [(w.ml_team, w.name("ppml-analyst"))]),
            "owner": (w.clinic, [(w.clinic, w.name("ppml-data-owner"))]),
            "viewer": (w.clinic, [(w.clinic, w.name("ppml-viewer"))]),
        }
        sa_names = {"operator": "ppml-operator"}
        for who, (home, grants) in parties.items():
            sa = sa_names.get(who, who)
            try:
                w.admin.post(
                    f"/api/v1/namespaces/{home}/serviceaccounts",
                    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}},
                )
                w.created_operator_sa |= who == "operator"
            except ApiError as err:  # the chart's own, when it is installed
                if not (who == "operator" and err.status == 409):
                    raise
            for ns, role in grants:
                w.admin.post(
                    f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "RoleBinding",
                        "metadata": {"name": f"{who}-{w.run}"},
                        "roleRef": {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "ClusterRole",
                            "name": role,
                        },
                        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": home}],
                    },
                )
            if who == "operator":
                crbs = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
                w.admin.post(
                    crbs,
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "ClusterRoleBinding",
                        "metadata": {"name": w.name("guard-test-operator")},
                        "roleRef": {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "ClusterRole",
                            "name": w.name("guard-test-operator"),
                        },
                        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": home}],
                    },
                )
                w.installed.append((crbs, w.name("guard-test-operator")))
            w.clients[who] = Client(
                apiserver_url(),
                w.cluster.paths.pki / "ca.crt",
                token=token_for(w.admin, home, sa),
            )
        wait_until_enforced(w)
        yield w
    finally:
        teardown(w)


def wait_until_enforced(w: World) -> None:
    """Policies and bindings reach the admission plugin through an informer: wait for them."""
    probe = w.budget(w.clinic, "probe", [charge("probe", "Committed")])
    deadline = time.monotonic() + 60
    while True:
        try:
            w.admin.delete(probe, {"dryRun": ["All"]})
        except ApiError as err:
            if err.status == 403 and LEDGER_REFUSAL in str(err):
                return
            raise
        if time.monotonic() > deadline:
            pytest.fail("the ledger guard was not enforced within 60 s")
        time.sleep(0.5)


def teardown(w: World) -> None:
    # The operator clears its finalizers and the ledgers (as only it may) while the guards are
    # still bound; any other guard on the cluster trusts it too, so the namespaces can go.
    operator = w.clients.get("operator", w.admin)
    jobs = PPML.format(ns=w.ml_team, res="privatetrainingjobs")
    with contextlib.suppress(ApiError):
        for job in w.admin.get(jobs)["items"]:
            operator.patch(f"{jobs}/{job['metadata']['name']}", {"metadata": {"finalizers": None}})
    for ns in (w.clinic, w.ml_team, w.doomed):
        budgets = PPML.format(ns=ns, res="privacybudgets")
        with contextlib.suppress(ApiError):
            for budget in w.admin.get(budgets)["items"]:
                budget["status"] = {"charges": [], "spentEpsilon": "0"}
                operator.put(f"{budgets}/{budget['metadata']['name']}/status", budget)
    for path, name in reversed(w.installed):
        with contextlib.suppress(ApiError):
            w.admin.delete(f"{path}/{name}")
    for ns in (w.ml_team, w.clinic, w.doomed):
        with contextlib.suppress(ApiError):
            w.admin.delete(f"/api/v1/namespaces/{ns}")
    if w.created_operator_sa:
        with contextlib.suppress(ApiError):
            w.admin.delete(f"/api/v1/namespaces/{w.system}/serviceaccounts/ppml-operator")


# -- a ledger that cannot be wiped -------------------------------------------------------------


def test_a_data_owner_cannot_delete_a_budget_that_holds_charges(world: World) -> None:
    path = world.budget(
        world.clinic, "records", [charge("a", "Committed"), charge("b", "Released")]
    )
    message = refused(lambda: world.as_("owner").delete(path), 403, LEDGER_REFUSAL)
    assert "PrivacyBudget records holds 1 Reserved or Committed charges" in message
    # Deleting every budget of the namespace at once (deletecollection, as the namespace
    # controller does) is refused item by item.
    refused(
        lambda: world.admin.delete(PPML.format(ns=world.clinic, res="privacybudgets")),
        403,
        LEDGER_REFUSAL,
    )
    assert world.admin.get(path)["status"]["charges"][0]["state"] == "Committed"


def test_a_reserved_charge_also_holds_the_budget(world: World) -> None:
    path = world.budget(world.clinic, "reserved", [charge("r", "Reserved")], spentEpsilon="0")
    refused(lambda: world.as_("owner").delete(path), 403, LEDGER_REFUSAL)


def test_folded_charges_hold_the_budget_too(world: World) -> None:
    path = world.budget(
        world.clinic, "folded", [], folded={"count": 50, "epsilon": "2.1"}, spentEpsilon="2.1"
    )
    refused(lambda: world.as_("owner").delete(path), 403, LEDGER_REFUSAL)


def test_a_budget_without_charges_or_with_only_released_ones_can_be_deleted(world: World) -> None:
    empty = world.budget(world.clinic, "empty", [], spentEpsilon="0")
    released = world.budget(world.clinic, "refunded", [charge("x", "Released")], spentEpsilon="0")
    world.as_("owner").delete(empty)
    world.as_("owner").delete(released)
    for path in (empty, released):
        with pytest.raises(ApiError) as err:
            world.admin.get(path)
        assert err.value.status == 404


def test_an_analyst_cannot_delete_a_budget(world: World) -> None:
    path = world.budget(world.clinic, "clinic-data", [charge("c", "Committed")])
    forbidden_by_rbac(lambda: world.as_("analyst").delete(path))
    forbidden_by_rbac(lambda: world.as_("analyst").get(path))
    # Single-namespace use: the analyst also owns a budget in ml-team (both roles), and the
    # policy refuses what RBAC allows.
    home = world.budget(world.ml_team, "team-data", [charge("t", "Committed")])
    world.admin.post(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{world.ml_team}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "analyst-owns-too"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": world.name("ppml-data-owner"),
            },
            "subjects": [{"kind": "ServiceAccount", "name": "analyst", "namespace": world.ml_team}],
        },
    )
    deadline = time.monotonic() + 30
    while True:  # until RBAC's informer has the new binding: 403 from RBAC, then the policy's
        message = refused(lambda: world.as_("analyst").delete(home), 403)
        if LEDGER_REFUSAL in message or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert LEDGER_REFUSAL in message, message


def test_not_even_a_cluster_admin_deletes_a_ledger_or_forces_it(world: World) -> None:
    path = world.budget(world.clinic, "admin-proof", [charge("d", "Committed")])
    refused(lambda: world.admin.delete(path), 403, LEDGER_REFUSAL)
    refused(
        lambda: world.admin.delete(
            path, {"gracePeriodSeconds": 0, "propagationPolicy": "Background"}
        ),
        403,
        LEDGER_REFUSAL,
    )
    force = world.cluster.kubectl(
        "delete", "pbudget", "admin-proof", "-n", world.clinic, "--force", "--grace-period=0"
    )
    assert force.returncode != 0 and LEDGER_REFUSAL in force.stderr, force.stderr
    # `kubectl replace --force` deletes, then creates: the delete is refused, nothing re-created.
    obj = world.admin.get(path)
    obj.pop("status")
    replace = world.cluster.kubectl("replace", "--force", "-f", "-", input=json.dumps(obj))
    assert replace.returncode != 0 and LEDGER_REFUSAL in replace.stderr, replace.stderr
    assert world.admin.get(path)["metadata"]["uid"] == obj["metadata"]["uid"]


def test_deleting_the_namespace_leaves_the_ledger_in_place(world: World) -> None:
    doomed = world.doomed
    path = world.budget(doomed, "ledger", [charge("e", "Committed", "1.5")])
    world.admin.delete(f"/api/v1/namespaces/{doomed}")

    def stuck() -> dict[str, Any] | None:
        ns = world.admin.get(f"/api/v1/namespaces/{doomed}")
        for c in ns.get("status", {}).get("conditions", []):
            if c["type"] == "NamespaceDeletionContentFailure" and c["status"] == "True":
                return c
        return None

    deadline = time.monotonic() + 60
    while (cond := stuck()) is None:
        assert time.monotonic() < deadline, "the namespace controller never reported the refusal"
        time.sleep(1)
    assert LEDGER_REFUSAL in cond["message"], cond
    budget = world.admin.get(path)
    assert budget["status"]["spentEpsilon"] == "1.5"
    assert "deletionTimestamp" not in budget["metadata"]


def test_nobody_but_the_operator_removes_a_charge_or_lowers_spent(world: World) -> None:
    path = world.budget(
        world.clinic, "ledger", [charge("f", "Committed", "1"), charge("g", "Reserved", "0.3")]
    )
    status = path + "/status"
    # People hold no right to the status subresource at all.
    for who in ("owner", "analyst", "viewer"):
        forbidden_by_rbac(
            lambda who=who: world.as_(who).patch(status, {"status": {"spentEpsilon": "0"}})
        )
    # A cluster admin bypasses RBAC, not the policy.
    current = world.admin.get(path)
    wiped = {**current, "status": {**current["status"], "charges": [], "spentEpsilon": "0"}}
    refused(lambda: world.admin.put(status, wiped), 403, "Only the ppml-operator may remove")
    released = copy.deepcopy(current)
    released["status"]["charges"][1]["state"] = "Released"
    refused(lambda: world.admin.put(status, released), 403, "Only the ppml-operator may remove")
    refused(
        lambda: world.admin.patch(status, {"status": {"spentEpsilon": "0.2"}}),
        403,
        "Spent epsilon never decreases",
    )
    # Charging more is not a wipe: a Reserved charge may become Committed, spent may grow.
    grown = copy.deepcopy(current)
    grown["status"]["charges"][1]["state"] = "Committed"
    grown["status"]["spentEpsilon"] = "1.3"
    world.admin.put(status, grown)
    # The operator folds committed charges away and drops old released ones.
    folded = world.admin.get(path)
    folded["status"]["charges"] = []
    folded["status"]["folded"] = {"count": 2, "epsilon": "1.3"}
    world.as_("operator").put(status, folded)
    after = world.admin.get(path)["status"]
    assert after["folded"]["count"] == 2 and after["spentEpsilon"] == "1.3"
    refused(
        lambda: world.admin.patch(status, {"status": {"folded": {"count": 0}}}),
        403,
        "Spent epsilon never decreases",
    )


def test_a_long_ledger_is_guarded_within_the_cel_cost_budget(world: World) -> None:
    """Refusals on a ledger far longer than the operator keeps (50 itemised) still say why."""
    charges = [charge(f"long-{i}", "Committed", "0.001") for i in range(300)]
    path = world.budget(world.clinic, "long", charges, spentEpsilon="0.3")
    current = world.admin.get(path)
    current["status"]["charges"] = current["status"]["charges"][1:]
    refused(lambda: world.admin.put(path + "/status", current), 403, "may remove or release")
    refused(lambda: world.as_("owner").delete(path), 403, "holds 300 Reserved or Committed")


def test_no_charge_is_reserved_on_a_budget_being_deleted(world: World) -> None:
    path = world.budget(world.clinic, "going", [], spentEpsilon="0")
    # The operator's finalizer keeps a deleted budget around for a moment; this one keeps it
    # for the length of the test.
    world.admin.patch(path, {"metadata": {"finalizers": ["example.com/hold"]}})
    world.as_("owner").delete(path)
    obj = world.admin.get(path)
    assert obj["metadata"]["deletionTimestamp"]
    obj["status"] = {"charges": [charge("late", "Reserved")], "spentEpsilon": "0"}
    refused(lambda: world.as_("operator").put(path + "/status", obj), 403, "is being deleted")
    world.admin.patch(path, {"metadata": {"finalizers": None}})


def test_the_privacybudget_crd_cannot_be_deleted_while_guarded(world: World) -> None:
    p = world.cluster.kubectl("delete", "crd", "privacybudgets.ppml.dev", "--dry-run=server")
    assert p.returncode != 0, "the dry-run deletion of the CRD was accepted"
    assert "Deleting the CRD privacybudgets.ppml.dev deletes every PrivacyBudget" in p.stderr


# -- the analyst and what the ledger relies on -------------------------------------------------


@pytest.fixture(scope="module")
def job(world: World) -> str:
    """A job the analyst submitted, with the finalizer the operator put on it."""
    path = PPML.format(ns=world.ml_team, res="privatetrainingjobs")
    world.as_("analyst").post(path, JOB)
    name = JOB["metadata"]["name"]
    world.as_("operator").patch(
        f"{path}/{name}",
        {
            "metadata": {
                "finalizers": [FINALIZER],
                "annotations": {"ppml.dev/last-handled-configuration": "{}"},
            }
        },
    )
    return f"{path}/{name}"


def test_an_analyst_cannot_strip_the_jobs_finalizer(world: World, job: str) -> None:
    analyst = world.as_("analyst")
    refused(
        lambda: analyst.patch(job, {"metadata": {"finalizers": None}}),
        403,
        "Only the ppml-operator may remove the finalizer ppml.dev/finalizer",
    )
    obj = analyst.get(job)
    obj["metadata"]["finalizers"] = []
    refused(lambda: analyst.put(job, obj), 403, "ppml.dev/finalizer")
    # ... nor the operator's bookkeeping in ppml.dev/ annotations, nor add one.
    refused(
        lambda: analyst.patch(
            job, {"metadata": {"annotations": {"ppml.dev/last-handled-configuration": None}}}
        ),
        403,
        "ppml.dev/ annotations and labels",
    )
    refused(
        lambda: analyst.patch(job, {"metadata": {"labels": {"ppml.dev/job-uid": "x"}}}),
        403,
        "ppml.dev/ annotations and labels",
    )
    # What the analyst may change is still changeable, and the finalizer stays.
    analyst.patch(job, {"metadata": {"labels": {"team": "ml"}}, "spec": {"suspend": True}})
    assert analyst.get(job)["metadata"]["finalizers"] == [FINALIZER]


def test_an_analyst_cannot_write_job_or_budget_status(world: World, job: str) -> None:
    analyst = world.as_("analyst")
    forbidden_by_rbac(lambda: analyst.patch(job + "/status", {"status": {"observedGeneration": 9}}))
    home = PPML.format(ns=world.ml_team, res="privacybudgets")
    world.budget(world.ml_team, "status-target", [charge("s", "Committed")])
    forbidden_by_rbac(
        lambda: analyst.patch(f"{home}/status-target/status", {"status": {"spentEpsilon": "0"}})
    )


def pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        # Never scheduled: the node selector matches no node.
        "spec": {
            "nodeSelector": {"ppml-guard-test": "nowhere"},
            "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
        },
    }


def can_i(
    client: Client, verb: str, resource: str, ns: str, sub: str = "", group: str = ""
) -> bool:
    """A SelfSubjectAccessReview: what RBAC lets this identity do."""
    review = client.post(
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "namespace": ns,
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "subresource": sub,
                }
            },
        },
    )
    return bool(review["status"]["allowed"])


def test_each_party_may_see_only_its_side(world: World) -> None:
    analyst, owner, viewer = world.as_("analyst"), world.as_("owner"), world.as_("viewer")
    clinic, team = world.clinic, world.ml_team
    # Nothing of the owner's namespace but what ppml-viewer-like reads would show: no pods,
    # logs, claims or Secrets, and no budgets (the analyst's role is bound in ml-team only).
    for resource in ("pods", "persistentvolumeclaims", "secrets", "configmaps"):
        forbidden_by_rbac(lambda r=resource: analyst.get(f"/api/v1/namespaces/{clinic}/{r}"))
    assert not can_i(analyst, "get", "pods", clinic, sub="log")
    # In its own namespace: jobs, their status, the delivered model's claim; no pods or Secrets.
    assert can_i(analyst, "create", "privatetrainingjobs", team, group="ppml.dev")
    assert can_i(analyst, "get", "privatetrainingjobs", team, sub="status", group="ppml.dev")
    assert can_i(analyst, "get", "persistentvolumeclaims", team)
    assert not can_i(analyst, "get", "secrets", team)
    # The owner: budgets, pods and their logs at home; no Secrets through this role, no jobs.
    assert can_i(owner, "get", "pods", clinic, sub="log")
    assert can_i(owner, "list", "jobs", clinic, group="batch")
    assert not can_i(owner, "get", "secrets", clinic)
    assert not can_i(owner, "create", "privatetrainingjobs", clinic, group="ppml.dev")
    assert not can_i(owner, "update", "privacybudgets", clinic, sub="status", group="ppml.dev")
    # The viewer reads budgets and changes nothing.
    budgets = PPML.format(ns=clinic, res="privacybudgets")
    assert viewer.get(budgets)["items"]
    path = world.budget(clinic, "viewed", [], spentEpsilon="0")
    forbidden_by_rbac(lambda: viewer.delete(path))
    forbidden_by_rbac(lambda: viewer.patch(path, {"spec": {"epsilon": "9"}}))


def test_an_analyst_cannot_read_or_relabel_the_pods_that_touch_the_data(world: World) -> None:
    labels = {
        "ppml.dev/job-uid": "uid-1",
        "ppml.dev/job-name": "digits",
        "app.kubernetes.io/component": "trainer",
    }
    pods = f"/api/v1/namespaces/{world.clinic}/pods"
    world.as_("operator").post(pods, pod("trainer-0", labels))
    analyst, owner = world.as_("analyst"), world.as_("owner")
    forbidden_by_rbac(lambda: analyst.get(pods))
    forbidden_by_rbac(lambda: analyst.get(f"{pods}/trainer-0/log"))
    forbidden_by_rbac(
        lambda: analyst.patch(
            f"{pods}/trainer-0", {"metadata": {"labels": {"ppml.dev/job-uid": "x"}}}
        )
    )
    # The data owner sees the pods (and would see their logs), and may not relabel them either.
    assert [p["metadata"]["name"] for p in owner.get(pods)["items"]] == ["trainer-0"]
    forbidden_by_rbac(
        lambda: owner.patch(
            f"{pods}/trainer-0", {"metadata": {"labels": {"ppml.dev/job-uid": "x"}}}
        )
    )


def test_with_edit_rights_the_policy_still_protects_the_labels(world: World) -> None:
    """Single-namespace use: the analyst also holds the built-in edit role in ml-team."""
    world.admin.post(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{world.ml_team}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "analyst-edit"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "edit",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "analyst", "namespace": world.ml_team}],
        },
    )
    labels = {
        "ppml.dev/job-uid": "uid-2",
        "ppml.dev/job-name": "digits",
        "app.kubernetes.io/component": "trainer",
    }
    pods = f"/api/v1/namespaces/{world.ml_team}/pods"
    world.as_("operator").post(pods, pod("trainer-0", labels))
    analyst = world.as_("analyst")
    deadline = time.monotonic() + 30
    while True:  # until RBAC's informer has the new binding
        try:
            analyst.get(pods)
            break
        except ApiError:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    rule = "Only the ppml-operator may set, change or remove the ppml.dev/ labels"
    refused(
        lambda: analyst.patch(
            f"{pods}/trainer-0", {"metadata": {"labels": {"ppml.dev/job-uid": "x"}}}
        ),
        403,
        rule,
    )
    refused(
        lambda: analyst.patch(
            f"{pods}/trainer-0", {"metadata": {"labels": {"ppml.dev/job-uid": None}}}
        ),
        403,
        rule,
    )
    refused(
        lambda: analyst.patch(
            f"{pods}/trainer-0", {"metadata": {"labels": {"app.kubernetes.io/component": "x"}}}
        ),
        403,
        "app.kubernetes.io/component",
    )
    # A pod posing as a job's own, directly or through a batch Job's template, is refused.
    refused(lambda: analyst.post(pods, pod("forged", labels)), 403, rule)
    batch = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        # Labelled itself as anything (unlabelled, it would take its template's labels).
        "metadata": {"name": "forged", "labels": {"app": "batch"}},
        "spec": {
            "template": {
                **pod("x", labels),
                "spec": {**pod("x", labels)["spec"], "restartPolicy": "Never"},
            }
        },
    }
    batch["spec"]["template"].pop("apiVersion")
    batch["spec"]["template"].pop("kind")
    refused(
        lambda: analyst.post(f"/apis/batch/v1/namespaces/{world.ml_team}/jobs", batch),
        403,
        "pod template",
    )
    # Ordinary pods and labels are the analyst's business.
    analyst.patch(f"{pods}/trainer-0", {"metadata": {"labels": {"team": "ml"}}})
    analyst.post(pods + "?dryRun=All", pod("own", {"app": "notebook"}))
    assert analyst.get(f"{pods}/trainer-0")["metadata"]["labels"]["ppml.dev/job-uid"] == "uid-2"


def test_the_operator_may_do_what_it_must(world: World, job: str) -> None:
    """The operator creates labelled pods (above), removes its finalizer, and deletes pods."""
    operator = world.as_("operator")
    operator.patch(job, {"metadata": {"finalizers": None}})
    assert "finalizers" not in world.admin.get(job)["metadata"]
    operator.delete(f"/api/v1/namespaces/{world.ml_team}/pods/trainer-0")
