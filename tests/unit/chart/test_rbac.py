"""The chart's RBAC: least privilege for the operator; roles for people that cannot write status.

Every rendered rule is checked against the table in docs/operator-guide.md, so a rule cannot be
added without saying why.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from .conftest import NAMESPACE, REPO, Rendered

DANGEROUS_VERBS = {"escalate", "bind", "impersonate", "*"}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
OPERATOR_ROLES = ("ppml-operator-cluster", "ppml-operator-namespaced")
USER_ROLES = ("ppml-viewer", "ppml-analyst", "ppml-data-owner")

VALUE_SETS = {
    "defaults (watch every namespace)": (),
    "two watched namespaces": ("operator.watchNamespaces={team-a,team-b}",),
    "aggregation to built-in roles": ("rbac.aggregateToDefaultRoles=true",),
    "data owner aggregated to admin": ("rbac.aggregateDataOwnerToAdmin=true",),
}


def roles(r: Rendered) -> list[dict[str, Any]]:
    return r.of_kind("ClusterRole") + r.of_kind("Role")


def grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """Flatten a role's rules to {(apiGroup, resource): verbs}."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role.get("rules", []):
        assert "nonResourceURLs" not in rule, f"{role['metadata']['name']} grants URLs"
        for g in rule["apiGroups"]:
            for res in rule["resources"]:
                out.setdefault((g, res), set()).update(rule["verbs"])
    return out


def can(role: dict[str, Any], verb: str, group: str, resource: str) -> bool:
    return verb in grants(role).get((group, resource), set())


@pytest.mark.parametrize("set_args", list(VALUE_SETS.values()), ids=list(VALUE_SETS))
def test_no_role_uses_wildcards_or_escalation_verbs(render, set_args):
    r = render(*set_args)
    assert roles(r), "the chart rendered no roles"
    for role in roles(r):
        name = role["metadata"]["name"]
        for rule in role["rules"]:
            assert "*" not in rule["apiGroups"], f"{name} has apiGroups '*'"
            assert "*" not in rule["resources"], f"{name} has resources '*'"
            assert not DANGEROUS_VERBS & set(rule["verbs"]), f"{name}: {rule['verbs']}"
            assert "resourceNames" not in rule or rule["resourceNames"], name


@pytest.mark.parametrize("set_args", list(VALUE_SETS.values()), ids=list(VALUE_SETS))
def test_no_role_can_read_secrets_and_the_operator_only_creates_and_deletes_them(render, set_args):
    r = render(*set_args)
    for role in roles(r):
        verbs = grants(role).get(("", "secrets"), set())
        if role["metadata"]["name"] == "ppml-operator-namespaced":
            assert verbs == {"create", "delete"}
        else:
            assert not verbs, f"{role['metadata']['name']} may {sorted(verbs)} secrets"


def test_only_the_operator_creates_pods_nobody_changes_them_and_no_role_touches_rbac(default):
    for role in roles(default):
        g = grants(role)
        pods = g.get(("", "pods"), set())
        assert not {"update", "patch"} & pods, role["metadata"]["name"]
        # The operator creates a FederatedJob's SuperLink and SuperNode pods; people do not.
        assert ("create" in pods) is (role["metadata"]["name"] == "ppml-operator-namespaced")
        for (group, res), verbs in g.items():
            assert group != "rbac.authorization.k8s.io", f"{role['metadata']['name']}: {res}"
            assert not (res.endswith("/exec") or res.endswith("/attach")), res
            assert (res != "nodes" and res != "namespaces") or not WRITE_VERBS & verbs


@pytest.mark.parametrize("role_name", USER_ROLES)
def test_no_user_role_can_write_any_status(default, role_name):
    role = default.get("ClusterRole", role_name)
    for (_group, res), verbs in grants(role).items():
        if res.endswith("/status"):
            assert not WRITE_VERBS & verbs, f"{role_name} may {sorted(verbs)} {res}"


USER_ROLE_TABLE = [
    # (role, verb, group, resource, allowed)
    ("ppml-viewer", "list", "ppml.dev", "privacybudgets", True),
    ("ppml-viewer", "get", "ppml.dev", "privatetrainingjobs/status", True),
    ("ppml-viewer", "create", "ppml.dev", "privatetrainingjobs", False),
    ("ppml-viewer", "update", "ppml.dev", "privacybudgets", False),
    ("ppml-viewer", "list", "", "pods", False),
    ("ppml-viewer", "list", "ppml.dev", "privatedatasets", True),
    ("ppml-viewer", "create", "ppml.dev", "privatedatasets", False),
    ("ppml-analyst", "create", "ppml.dev", "privatetrainingjobs", True),
    ("ppml-analyst", "create", "ppml.dev", "federatedjobs", True),
    ("ppml-analyst", "delete", "ppml.dev", "federatedjobs", True),
    ("ppml-analyst", "get", "ppml.dev", "privatetrainingjobs/status", True),
    ("ppml-analyst", "get", "", "persistentvolumeclaims", True),
    # The claim the model is delivered to (spec.output.model.claimName) is the analyst's own.
    ("ppml-analyst", "create", "", "persistentvolumeclaims", True),
    ("ppml-analyst", "delete", "", "persistentvolumeclaims", False),
    ("ppml-analyst", "patch", "", "persistentvolumeclaims", False),
    # A data owner's declaration is not the analyst's to read or write.
    ("ppml-analyst", "get", "ppml.dev", "privatedatasets", False),
    ("ppml-analyst", "list", "ppml.dev", "privatedatasets", False),
    ("ppml-analyst", "create", "ppml.dev", "privatedatasets", False),
    ("ppml-analyst", "get", "ppml.dev", "privacybudgets", True),
    ("ppml-analyst", "update", "ppml.dev", "privacybudgets", False),
    ("ppml-analyst", "patch", "ppml.dev", "privacybudgets", False),
    ("ppml-analyst", "create", "ppml.dev", "privacybudgets", False),
    ("ppml-analyst", "delete", "ppml.dev", "privacybudgets", False),
    ("ppml-analyst", "patch", "ppml.dev", "privacybudgets/status", False),
    ("ppml-analyst", "patch", "ppml.dev", "privatetrainingjobs/status", False),
    ("ppml-analyst", "get", "", "pods", False),
    ("ppml-analyst", "get", "", "pods/log", False),
    ("ppml-analyst", "create", "", "pods", False),
    ("ppml-analyst", "create", "batch", "jobs", False),
    ("ppml-data-owner", "create", "ppml.dev", "privacybudgets", True),
    ("ppml-data-owner", "create", "ppml.dev", "privatedatasets", True),
    ("ppml-data-owner", "patch", "ppml.dev", "privatedatasets", True),
    ("ppml-data-owner", "delete", "ppml.dev", "privatedatasets", True),
    ("ppml-data-owner", "create", "", "persistentvolumeclaims", True),
    ("ppml-data-owner", "delete", "", "persistentvolumeclaims", False),
    ("ppml-data-owner", "list", "", "events", True),
    ("ppml-data-owner", "patch", "ppml.dev", "privacybudgets", True),
    ("ppml-data-owner", "delete", "ppml.dev", "privacybudgets", True),
    ("ppml-data-owner", "update", "ppml.dev", "privacybudgets/status", False),
    ("ppml-data-owner", "patch", "ppml.dev", "privacybudgets/status", False),
    ("ppml-data-owner", "create", "ppml.dev", "privatetrainingjobs", False),
    ("ppml-data-owner", "list", "ppml.dev", "federatedjobs", True),
    ("ppml-data-owner", "list", "", "pods", True),
    ("ppml-data-owner", "get", "", "pods/log", True),
    ("ppml-data-owner", "list", "batch", "jobs", True),
    ("ppml-data-owner", "patch", "", "pods", False),
    ("ppml-data-owner", "delete", "", "pods", False),
    ("ppml-data-owner", "create", "", "pods/exec", False),
]


@pytest.mark.parametrize(
    ("role_name", "verb", "group", "resource", "allowed"),
    USER_ROLE_TABLE,
    ids=[f"{r} {'may' if a else 'may not'} {v} {res}" for r, v, _g, res, a in USER_ROLE_TABLE],
)
def test_user_roles_grant_what_people_need(default, role_name, verb, group, resource, allowed):
    assert can(default.get("ClusterRole", role_name), verb, group, resource) is allowed


# Outside ppml.dev, people create only claims: the analyst the one the model is delivered to,
# the data owner the one the records live on. create cannot reach an existing object.
CREATES_OUTSIDE_PPML = {
    "ppml-viewer": set(),
    "ppml-analyst": {("", "persistentvolumeclaims")},
    "ppml-data-owner": {("", "persistentvolumeclaims")},
}


@pytest.mark.parametrize("role_name", USER_ROLES)
def test_no_user_role_may_change_what_the_operator_created(default, role_name):
    g = grants(default.get("ClusterRole", role_name))
    creates = set()
    for (group, res), verbs in g.items():
        if group != "ppml.dev":
            changes = (WRITE_VERBS - {"create"}) & verbs
            assert not changes, f"{role_name} may {sorted(changes)} {group}/{res}"
            if "create" in verbs:
                creates.add((group, res))
        assert res != "secrets", role_name
    assert creates == CREATES_OUTSIDE_PPML[role_name]


def test_the_claims_people_create_cannot_pose_as_the_operators(default):
    """A claim created with a ppml.dev/ label would be listed (and deleted) as a job's child."""
    guard = default.get("ValidatingAdmissionPolicy", "ppml-children-guard")
    resources = {
        (g, res)
        for rule in guard["spec"]["matchConstraints"]["resourceRules"]
        if "CREATE" in rule["operations"]
        for g in rule["apiGroups"]
        for res in rule["resources"]
    }
    for role_name, created in CREATES_OUTSIDE_PPML.items():
        assert created <= resources, role_name


AGGREGATION = {
    "defaults: none": (
        (),
        {
            "ppml-viewer": set(),
            "ppml-analyst": set(),
            "ppml-data-owner": set(),
        },
    ),
    "aggregation on": (
        ("rbac.aggregateToDefaultRoles=true",),
        {
            "ppml-viewer": {"view", "edit", "admin"},
            "ppml-analyst": {"edit", "admin"},
            "ppml-data-owner": set(),
        },
    ),
    "data owner to admin": (
        ("rbac.aggregateDataOwnerToAdmin=true",),
        {
            "ppml-viewer": set(),
            "ppml-analyst": set(),
            "ppml-data-owner": {"admin"},
        },
    ),
    "data owner to admin, by its 0.1 name": (
        ("rbac.aggregateBudgetOwnerToAdmin=true",),
        {
            "ppml-viewer": set(),
            "ppml-analyst": set(),
            "ppml-data-owner": {"admin"},
        },
    ),
}


@pytest.mark.parametrize(
    ("set_args", "expected"), list(AGGREGATION.values()), ids=list(AGGREGATION)
)
def test_user_roles_aggregate_into_built_in_roles_as_configured(render, set_args, expected):
    r = render(*set_args)
    for name, targets in expected.items():
        labels = r.get("ClusterRole", name)["metadata"]["labels"]
        got = {
            k.rsplit("aggregate-to-", 1)[1]
            for k, v in labels.items()
            if k.startswith("rbac.authorization.k8s.io/aggregate-to-") and v == "true"
        }
        assert got == targets, name


def test_user_roles_can_be_left_out(render):
    r = render("rbac.userRoles=false")
    assert not set(USER_ROLES) & r.names("ClusterRole")


def test_cluster_wide_mode_binds_the_namespaced_role_cluster_wide(default):
    crbs = {b["roleRef"]["name"]: b for b in default.of_kind("ClusterRoleBinding")}
    assert set(crbs) == set(OPERATOR_ROLES)
    for b in crbs.values():
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": "ppml-operator", "namespace": NAMESPACE}
        ]
    assert not default.of_kind("RoleBinding")


def test_namespaced_mode_binds_only_the_watched_namespaces(render):
    r = render("operator.watchNamespaces={team-a,team-b}")
    assert [b["roleRef"]["name"] for b in r.of_kind("ClusterRoleBinding")] == [
        "ppml-operator-cluster"
    ]
    rbs = r.of_kind("RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in rbs) == ["team-a", "team-b"]
    for b in rbs:
        assert b["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "ppml-operator-namespaced",
        }


def test_rbac_can_be_left_to_the_cluster_admin(render):
    r = render("rbac.create=false", "rbac.userRoles=false")
    assert not roles(r)
    assert not r.of_kind("ClusterRoleBinding") and not r.of_kind("RoleBinding")


# --- the documented table -------------------------------------------------------------------

GUIDE = REPO / "docs" / "operator-guide.md"


def documented_rules() -> dict[tuple[str, str, str], set[str]]:
    """Parse the RBAC table of docs/operator-guide.md into {(role, group, resource): verbs}."""
    text = GUIDE.read_text()
    m = re.search(r"<!-- rbac-table:begin -->(.*?)<!-- rbac-table:end -->", text, re.S)
    assert m, "docs/operator-guide.md has no rbac-table markers"
    out: dict[tuple[str, str, str], set[str]] = {}
    for line in m.group(1).strip().splitlines()[2:]:
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        role, groups, resources, verbs = cells[:4]
        assert cells[4], f"rule without a reason: {line}"
        for g in groups.split(","):
            group = "" if g.strip() == "core" else g.strip()
            for res in resources.split(","):
                key = (role, group, res.strip())
                assert key not in out, f"documented twice: {key}"
                out[key] = {v.strip() for v in verbs.split(",")}
    return out


WATCH_LISTED = "cluster, with `watchNamespaces` only"


def rendered_rules(r: Rendered) -> dict[tuple[str, str, str], set[str]]:
    out: dict[tuple[str, str, str], set[str]] = {}
    for name in OPERATOR_ROLES:
        suffix = name.removeprefix("ppml-operator-")
        for (group, res), verbs in grants(r.get("ClusterRole", name)).items():
            out[(suffix, group, res)] = verbs
    return out


def test_every_operator_rule_is_documented_with_a_reason(default):
    documented = {k: v for k, v in documented_rules().items() if k[0] != WATCH_LISTED}
    assert rendered_rules(default) == documented


def test_watching_listed_namespaces_adds_only_the_documented_namespace_rule(render):
    documented: dict[tuple[str, str, str], set[str]] = {}
    for (role, group, res), verbs in documented_rules().items():
        key = ("cluster" if role == WATCH_LISTED else role, group, res)
        documented[key] = documented.get(key, set()) | verbs
    assert rendered_rules(render("operator.watchNamespaces={team-a}")) == documented


def test_the_guide_documents_exactly_the_roles_for_people(default):
    text = GUIDE.read_text()
    section = text[text.index("## Rights for people") : text.index("### Upgrading")]
    documented = set(re.findall(r"^\| `(ppml-[a-z-]+)` \|", section, re.M))
    rendered = {
        r["metadata"]["name"]
        for r in default.of_kind("ClusterRole")
        if not r["metadata"]["name"].startswith("ppml-operator")
    }
    assert documented == rendered == set(USER_ROLES)


@pytest.mark.parametrize("set_args", list(VALUE_SETS.values()), ids=list(VALUE_SETS))
def test_only_the_operator_may_write_the_ledger(render, set_args):
    writers = {
        role["metadata"]["name"]
        for role in roles(render(*set_args))
        if WRITE_VERBS & grants(role).get(("ppml.dev", "privacybudgets/status"), set())
    }
    assert writers == {"ppml-operator-namespaced"}
