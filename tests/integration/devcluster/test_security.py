"""Admission and authorization: PodSecurity, static token users, service-account RBAC."""

from __future__ import annotations

import json

import pytest
from dc_helpers import Kube, pod_manifest, terminated

from devcluster.cluster import Cluster
from devcluster.kubeapi import ApiError


def test_a_restricted_namespace_refuses_a_privileged_pod(kube: Kube) -> None:
    kube.api.patch(f"/api/v1/namespaces/{kube.ns}", {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}})
    with pytest.raises(ApiError) as err:
        kube.create("pods", pod_manifest(
            "priv", "pass", container={"securityContext": {"privileged": True}}))
    assert err.value.status == 403
    assert "violates PodSecurity" in str(err.value)


@pytest.mark.parametrize("user", ["tenant", "data-owner", "viewer"])
def test_a_token_user_without_rights_gets_403(devcluster: Cluster, namespace: str,
                                              user: str) -> None:
    api = devcluster.api(user)
    with pytest.raises(ApiError) as err:
        api.get(f"/api/v1/namespaces/{namespace}/secrets")
    assert err.value.status == 403
    out = devcluster.kubectl("get", "configmaps", "-n", namespace, user=user)
    assert out.returncode != 0
    assert "Forbidden" in out.stderr


def test_granting_a_role_lets_the_token_user_in(devcluster: Cluster, kube: Kube) -> None:
    kube.create("roles", {"metadata": {"name": "read-cm"}, "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]},
        group="rbac.authorization.k8s.io/v1")
    kube.create("rolebindings", {
        "metadata": {"name": "viewer-read-cm"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-cm"},
        "subjects": [{"kind": "User", "name": "viewer", "apiGroup": "rbac.authorization.k8s.io"}],
    }, group="rbac.authorization.k8s.io/v1")
    out = devcluster.kubectl("get", "configmaps", "-n", kube.ns, user="viewer", check=True)
    assert "kube-root-ca.crt" in out.stdout
    with pytest.raises(ApiError) as err:
        devcluster.api("viewer").get(f"/api/v1/namespaces/{kube.ns}/secrets")
    assert err.value.status == 403


IN_CLUSTER = """
import json
from kubernetes import client, config
config.load_incluster_config()
v1 = client.CoreV1Api()
out = {}
out['configmaps'] = sorted(c.metadata.name for c in v1.list_namespaced_config_map('{ns}').items)
for what, call in [('secrets', lambda: v1.list_namespaced_secret('{ns}')),
                   ('pods', lambda: v1.list_namespaced_pod('{ns}')),
                   ('other-namespace', lambda: v1.list_namespaced_config_map('default'))]:
    try:
        call(); out[what] = 'allowed'
    except client.ApiException as err:
        out[what] = err.status
open('/dev/termination-log', 'w').write(json.dumps(out))
"""


def test_a_pod_service_account_token_gets_exactly_its_rbac(kube: Kube) -> None:
    rbac = "rbac.authorization.k8s.io/v1"
    kube.create("serviceaccounts", {"metadata": {"name": "reader"}})
    kube.create("roles", {"metadata": {"name": "read-cm"}, "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]}, group=rbac)
    kube.create("rolebindings", {
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-cm"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": kube.ns}],
    }, group=rbac)
    kube.create("configmaps", {"metadata": {"name": "visible"}})
    kube.create("pods", pod_manifest("p", IN_CLUSTER.replace("{ns}", kube.ns),
                                     serviceAccountName="reader"))
    pod = kube.wait_phase("p", timeout=60)
    msg = terminated(pod).get("message", "")
    assert pod["status"]["phase"] == "Succeeded", msg
    assert json.loads(msg) == {
        "configmaps": ["kube-root-ca.crt", "visible"],
        "secrets": 403, "pods": 403, "other-namespace": 403,
    }
