"""The chart's admission policies: which objects they guard, whom they trust, what they keep.

What the policies refuse is proven on the real API server, with real identities, in
tests/integration/api/test_admission_policies.py; here the rendered objects are checked.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from ppml_operator.render import common

from .conftest import REPO, HelmError, Rendered

POLICY = "ValidatingAdmissionPolicy"
BINDING = "ValidatingAdmissionPolicyBinding"
KEPT = {"ppml-ledger-guard", "ppml-ledger-crd-guard"}
NOT_KEPT = {"ppml-job-guard", "ppml-children-guard"}
OPERATOR = "system:serviceaccount:ppml-system:ppml-operator"


def cel(policy: dict[str, Any]) -> str:
    """Every CEL expression of a policy, joined."""
    spec = policy["spec"]
    parts = [c["expression"] for c in spec.get("matchConditions", [])]
    parts += [v["expression"] for v in spec.get("variables", [])]
    for v in spec["validations"]:
        parts += [v["expression"], v.get("messageExpression", v.get("message", ""))]
    return "\n".join(parts)


def rules(policy: dict[str, Any]) -> set[tuple[str, str, str]]:
    """{(apiGroup, resource, operation)} the policy matches."""
    return {
        (g, res, op)
        for r in policy["spec"]["matchConstraints"]["resourceRules"]
        for g in r["apiGroups"]
        for res in r["resources"]
        for op in r["operations"]
    }


def test_every_policy_is_bound_denies_and_fails_closed(default: Rendered) -> None:
    assert default.names(POLICY) == KEPT | NOT_KEPT
    assert default.names(BINDING) == KEPT | NOT_KEPT
    for binding in default.of_kind(BINDING):
        assert binding["spec"]["policyName"] == binding["metadata"]["name"]
        assert binding["spec"]["validationActions"] == ["Deny"]
        # Bound everywhere: a namespace selector would leave namespaces unguarded.
        assert "matchResources" not in binding["spec"]
    for policy in default.of_kind(POLICY):
        assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert policy["spec"]["failurePolicy"] == "Fail"
        for v in policy["spec"]["validations"]:
            assert v["reason"] == "Forbidden"
            assert v.get("messageExpression") or v.get("message")


def test_no_expression_reads_fields_a_request_may_lack(default: Rendered) -> None:
    # request.subResource is absent from a request on the main resource: reading it is an
    # error, which a validation only survives while another operand of its || is true.
    for policy in default.of_kind(POLICY):
        assert "subResource" not in cel(policy), policy["metadata"]["name"]


def test_the_ledger_guard_watches_budget_deletion_and_status_updates_only(default) -> None:
    guard = default.get(POLICY, "ppml-ledger-guard")
    assert rules(guard) == {
        ("ppml.dev", "privacybudgets", "DELETE"),
        ("ppml.dev", "privacybudgets/status", "UPDATE"),
    }
    text = cel(guard)
    # A deletion is refused while any charge is Reserved or Committed, or committed ones are
    # folded away; the refusal names the budget.
    assert "c.state == 'Reserved' || c.state == 'Committed'" in text
    assert "folded.count" in text
    assert "oldObject.metadata.name" in text
    # The operator alone may remove charges, release them or lower the totals.
    assert f'request.userInfo.username in ["{OPERATOR}"]' in text
    assert "double(object.status.spentEpsilon)" in text


def test_the_crd_guard_protects_only_the_budget_crd(default) -> None:
    guard = default.get(POLICY, "ppml-ledger-crd-guard")
    [rule] = guard["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["customresourcedefinitions"]
    assert rule["resourceNames"] == ["privacybudgets.ppml.dev"]
    assert rule["operations"] == ["DELETE"]


@pytest.mark.parametrize(
    ("set_args", "kept", "present"),
    [
        ((), True, KEPT | NOT_KEPT),
        (("crds.keep=false",), False, {"ppml-ledger-guard"} | NOT_KEPT),
        (("crds.enabled=false",), True, KEPT | NOT_KEPT),
    ],
    ids=["CRDs kept (default)", "CRDs not kept", "CRDs managed elsewhere"],
)
def test_the_ledger_guard_outlives_the_release_as_the_crds_do(render, set_args, kept, present):
    r = render(*set_args)
    assert r.names(POLICY) == present
    for kind in (POLICY, BINDING):
        for obj in r.of_kind(kind):
            annotations = obj["metadata"].get("annotations") or {}
            keep = annotations.get("helm.sh/resource-policy") == "keep"
            if obj["metadata"]["name"] in KEPT:
                assert keep is kept, obj["metadata"]["name"]
                if kept:
                    assert "Prune=false" in annotations["argocd.argoproj.io/sync-options"]
            else:
                # Without the operator, an admin must be able to clear its finalizers.
                assert not keep, obj["metadata"]["name"]


def test_the_job_guard_keeps_the_operators_finalizer_and_bookkeeping(default) -> None:
    guard = default.get(POLICY, "ppml-job-guard")
    assert rules(guard) == {
        ("ppml.dev", "privatetrainingjobs", "UPDATE"),
        ("ppml.dev", "federatedjobs", "UPDATE"),
    }
    text = cel(guard)
    register = (REPO / "operator/src/ppml_operator/handlers/register.py").read_text()
    [finalizer] = re.findall(r'^FINALIZER = "([^"]+)"', register, re.M)
    assert f"'{finalizer}' in variables.oldFinalizers" in text
    assert "k.startsWith('ppml.dev/')" in text


def test_the_children_guard_covers_the_labels_the_operator_selects_by(default) -> None:
    guard = default.get(POLICY, "ppml-children-guard")
    matched = {(g, res) for g, res, _ in rules(guard)}
    # Every kind the operator creates and finds again by label.
    for kind in (
        ("", "pods"),
        ("batch", "jobs"),
        ("", "configmaps"),
        ("", "services"),
        ("", "serviceaccounts"),
        ("networking.k8s.io", "networkpolicies"),
        ("", "persistentvolumeclaims"),
    ):
        assert kind in matched
    assert {op for _, _, op in rules(guard)} == {"CREATE", "UPDATE"}
    text = cel(guard)
    # The selector the operator lists a job's pods by: every key of it is protected, the
    # ppml.dev/ ones by their prefix, the component label by name.
    assert "k.startsWith('ppml.dev/')" in text
    job = {"metadata": {"name": "j", "uid": "u"}}
    for key in common.selector(job, "trainer"):
        assert key.startswith("ppml.dev/") or f"'{key}'" in text, key
    assert common.LABEL_JOB_UID.startswith("ppml.dev/")
    assert common.LABEL_JOB_NAME.startswith("ppml.dev/")
    # Children in a data owner's namespace have no owner reference: the job's namespace and
    # UID labels are all that tie them to it, and the component label is kept on either.
    assert common.LABEL_JOB_NAMESPACE.startswith("ppml.dev/")
    for key in (common.LABEL_JOB_UID, common.LABEL_JOB_NAMESPACE):
        assert f"'{key}' in variables.oldLabels" in text, key
    # The job controller creates the pods of the operator's batch Jobs from their template.
    assert "system:serviceaccount:kube-system:job-controller" in text


@pytest.mark.parametrize(
    ("set_args", "expected"),
    [
        ((), [OPERATOR]),
        (("serviceAccount.name=ppml-bot",), ["system:serviceaccount:ppml-system:ppml-bot"]),
        (
            ("admissionPolicies.extraOperatorUsernames={devcluster-admin}",),
            [OPERATOR, "devcluster-admin"],
        ),
    ],
    ids=["the chart's ServiceAccount", "a renamed ServiceAccount", "an extra identity"],
)
def test_the_policies_trust_exactly_the_operators_identities(render, set_args, expected):
    r = render(*set_args)
    literal = "[" + ",".join(f'"{u}"' for u in expected) + "]"
    for name in ("ppml-ledger-guard", "ppml-job-guard", "ppml-children-guard"):
        text = cel(r.get(POLICY, name))
        assert f"request.userInfo.username in {literal}" in text, name


def test_the_policies_can_be_left_out(render) -> None:
    r = render("admissionPolicies.enabled=false")
    assert not r.of_kind(POLICY) and not r.of_kind(BINDING)


def test_an_extra_operator_name_cannot_break_out_of_the_cel_string(render) -> None:
    with pytest.raises(HelmError) as err:
        render('admissionPolicies.extraOperatorUsernames={x"] || true || ["y}')
    assert "extraOperatorUsernames" in str(err.value)
