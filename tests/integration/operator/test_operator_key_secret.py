"""A FederatedJob's key Secret under the chart's Secret rights: create and delete, never read.

``act`` creates a write-only kind with create-only semantics (201 done, 409 already there from
an earlier pass) and so never needs the ``get`` that RBAC refuses. Real API server, real RBAC:
the operator's client acts as the ``tenant`` identity, granted on Secrets exactly what the chart
grants the operator.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
from op_helpers import Kube

from ppml_operator import k8s
from ppml_operator.handlers.act import act
from ppml_operator.reconcile.plan import Deletion, Plan

LOG = logging.getLogger("test.key-secret")


def _grant_secrets_write_only(kube: Kube) -> None:
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "keys-writer"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"],
                       "verbs": ["create", "delete"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "keys-writer"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": "keys-writer"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                             "name": "tenant"}]}
    kube.apply(json.dumps(role))
    kube.apply(json.dumps(binding))


def _secret(namespace: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
            "metadata": {"name": "digits-tls", "namespace": namespace},
            "data": {"ca.crt": base64.b64encode(value.encode()).decode()}}


def test_the_key_secret_is_created_once_and_deleted_without_ever_being_read(
    kube: Kube, devcluster: Any, operator: Any
) -> None:
    # ``operator`` (never started) gives a namespace no operator watches: only this test acts.
    _grant_secrets_write_only(kube)
    ns = kube.namespace
    client = k8s.Client(k8s.load_configuration(str(devcluster.user_kubeconfig("tenant"))))
    job = {"metadata": {"namespace": ns, "name": "digits", "uid": "u"}}
    try:
        with pytest.raises(k8s.ForbiddenError):  # what ensure's GET after a 409 would meet
            client.get("Secret", ns, "digits-tls")
        act(client, "FederatedJob", job, Plan(create=[_secret(ns, "first pass")]), LOG)
        # A later pass that does not know the first one's create landed: 409, and done.
        act(client, "FederatedJob", job, Plan(create=[_secret(ns, "second pass")]), LOG)
        stored = kube.get("Secret", "digits-tls")  # read back as admin
        assert stored is not None
        assert base64.b64decode(stored["data"]["ca.crt"]) == b"first pass"
        teardown = Plan(deletions=[Deletion("Secret", "digits-tls")])
        act(client, "FederatedJob", job, teardown, LOG)
        act(client, "FederatedJob", job, teardown, LOG)  # already gone: 404 is fine
        kube.gone("Secret", "digits-tls")
    finally:
        client.close()
