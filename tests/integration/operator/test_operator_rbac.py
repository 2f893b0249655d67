"""Who may write the ledger: a tenant can submit jobs and read budgets, never write their status."""

from __future__ import annotations

from typing import Any

import pytest
from op_helpers import Kube, budget

from devcluster.kubeapi import ApiError

BASE = "/apis/ppml.dev/v1alpha1/namespaces/{ns}/privacybudgets/clinic"


def _grant(kube: Kube, name: str, group: str, rules: list[dict[str, Any]]) -> None:
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name}, "rules": rules}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": name},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                             "name": group}]}
    import json

    kube.apply(json.dumps(role))
    kube.apply(json.dumps(binding))


def test_a_tenant_cannot_write_budget_status_or_raise_its_epsilon(
    kube: Kube, devcluster: Any
) -> None:
    kube.apply(budget("clinic", epsilon="3"))
    _grant(kube, "job-submitter", "ppml:tenants", [
        {"apiGroups": ["ppml.dev"], "resources": ["privatetrainingjobs"],
         "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
        {"apiGroups": ["ppml.dev"], "resources": ["privacybudgets"],
         "verbs": ["get", "list", "watch"]},
    ])
    _grant(kube, "budget-owner", "ppml:data-owners", [
        {"apiGroups": ["ppml.dev"], "resources": ["privacybudgets"],
         "verbs": ["get", "list", "watch", "update", "patch"]},
    ])
    path = BASE.format(ns=kube.namespace)
    tenant = devcluster.api(user="tenant")
    owner = devcluster.api(user="data-owner")
    current = tenant.get(path)  # reading is allowed
    forged = {**current, "status": {"spentEpsilon": "0", "charges": []}}
    with pytest.raises(ApiError) as err:
        tenant.put(path + "/status", forged)
    assert err.value.status == 403
    with pytest.raises(ApiError) as err:
        tenant.patch(path + "/status", {"status": {"remainingEpsilon": "1000"}})
    assert err.value.status == 403
    with pytest.raises(ApiError) as err:
        tenant.patch(path, {"spec": {"epsilon": "1000"}})
    assert err.value.status == 403
    # A data owner, granted the budget itself but not its status subresource, may raise the
    # epsilon and still not touch the ledger.
    owner.patch(path, {"spec": {"epsilon": "4"}})
    with pytest.raises(ApiError) as err:
        owner.patch(path + "/status", {"status": {"spentEpsilon": "0"}})
    assert err.value.status == 403
