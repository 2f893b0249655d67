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
from op_helpers import REPO, Kube

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


def _chart_operator_rules() -> list[dict[str, Any]]:
    """The namespaced rules the chart grants the operator, as ``helm template`` renders them."""
    import shutil
    import subprocess

    import yaml

    from devcluster import tools

    helm = shutil.which("helm") or tools.find(tools.bin_dir(build=True), "helm")
    out = subprocess.run(
        [helm, "template", "ppml", str(REPO / "charts" / "ppml-operator"), "--namespace",
         "ppml-system", "--kube-version", "1.34.4"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    [role] = [d for d in yaml.safe_load_all(out) if d and d.get("kind") == "ClusterRole"
              and d["metadata"]["name"] == "ppml-operator-namespaced"]
    rules: list[dict[str, Any]] = role["rules"]
    return rules


def test_a_federation_is_admitted_and_started_under_exactly_the_charts_rules(
    kube: Kube, devcluster: Any, operator: Any
) -> None:
    from ppml_operator.handlers import jobs
    from ppml_operator.handlers.config import Settings
    from ppml_operator.reconcile.kinds import FEDERATED

    ns = kube.namespace
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "chart-operator"}, "rules": _chart_operator_rules()}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "chart-operator"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": "chart-operator"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                             "name": "tenant"}]}
    kube.apply(json.dumps(role))
    kube.apply(json.dumps(binding))
    kube.apply((REPO / "examples" / "federated" / "digits-3-silos.yaml").read_text())
    job = kube.get("FederatedJob", "digits-3-silos")
    assert job is not None
    uid = job["metadata"]["uid"]
    client = k8s.Client(k8s.load_configuration(str(devcluster.user_kubeconfig("tenant"))))
    try:
        for _ in range(3):  # admit and create; then observe (children, pods) with the record
            jobs.reconcile(client, FEDERATED, ns, "digits-3-silos", uid,
                           Settings.from_env(), LOG)
        job = kube.get("FederatedJob", "digits-3-silos")
        assert job is not None
        assert job["metadata"]["annotations"]["ppml.dev/keys-secret"] == "digits-3-silos-tls"
        secret = kube.get("Secret", "digits-3-silos-tls")  # read back as admin
        assert secret is not None and secret["immutable"] is True
        assert {"ca.crt", "tls.crt", "tls.key", "supernode-clinic-a.key",
                "supernode-clinic-a.pub"} <= set(secret["data"])
        assert kube.get("Pod", "digits-3-silos-superlink") is not None
        assert kube.get("Job", "digits-3-silos-submit") is not None
    finally:
        client.close()
        kube.delete("FederatedJob", "digits-3-silos")  # no pod needs to run for this check
