"""The operator Deployment: one replica replaced (never rolled), probed, locked down."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from .conftest import CHART, NAMESPACE, Rendered

APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


def deployment(r: Rendered) -> dict[str, Any]:
    [d] = r.of_kind("Deployment")
    return d


def container(r: Rendered) -> dict[str, Any]:
    [c] = deployment(r)["spec"]["template"]["spec"]["containers"]
    return c


def test_one_replica_replaced_not_rolled(default):
    spec = deployment(default)["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_the_command_is_written_out_for_runtimes_that_ignore_the_image(default):
    c = container(default)
    assert c["command"] == ["python", "-m", "ppml_operator"]


def test_the_probes_hit_the_port_kopf_serves_liveness_on(default):
    c = container(default)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert f"--liveness-port={ports['healthz']}" in c["args"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}


def test_the_probe_port_follows_values(render):
    c = container(render("probes.port=9000"))
    assert "--liveness-port=9000" in c["args"]
    assert {"name": "healthz", "containerPort": 9000, "protocol": "TCP"} in c["ports"]


def test_restricted_security_context_and_read_only_root(default):
    pod = deployment(default)["spec"]["template"]["spec"]
    c = container(default)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert not sc.get("privileged")
    # A writable /tmp, because the root filesystem is not.
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert not any("hostPath" in v for v in pod["volumes"])
    assert not pod.get("hostNetwork") and not pod.get("hostPID")


def test_resources_are_set(default):
    res = container(default)["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]


def test_the_service_account_is_the_charts_own(default):
    pod = deployment(default)["spec"]["template"]["spec"]
    [sa] = default.of_kind("ServiceAccount")
    assert pod["serviceAccountName"] == sa["metadata"]["name"] == "ppml-operator"
    assert sa["metadata"]["namespace"] == NAMESPACE


NAMESPACE_MODES = {
    "every namespace": ((), []),
    "one namespace": (("operator.watchNamespaces={team-a}",), ["--namespace=team-a"]),
    "two namespaces": (
        ("operator.watchNamespaces={team-a,team-b}",),
        ["--namespace=team-a", "--namespace=team-b"],
    ),
}


@pytest.mark.parametrize(
    ("set_args", "expected"), list(NAMESPACE_MODES.values()), ids=list(NAMESPACE_MODES)
)
def test_namespace_selection_reaches_the_command_line(render, set_args, expected):
    args = container(render(*set_args))["args"]
    got = [a for a in args if a.startswith("--namespace")]
    assert got == expected


def test_default_images_are_tagged_with_the_app_version(default):
    c = container(default)
    assert c["image"] == f"ghcr.io/ppml-operator/ppml-operator:{APP_VERSION}"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["PPML_RUNTIME_IMAGE"] == f"ghcr.io/ppml-operator/ppml-runtime:{APP_VERSION}"


def test_a_digest_pins_the_image(render):
    digest = "sha256:" + "ab" * 32
    c = container(render(f"image.digest={digest}"))
    assert c["image"] == f"ghcr.io/ppml-operator/ppml-operator@{digest}"


def test_metrics_service_targets_the_metrics_port(default):
    [svc] = default.of_kind("Service")
    c = container(default)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert f"--metrics-port={ports['metrics']}" in c["args"]
    pod_labels = deployment(default)["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_metrics_can_be_turned_off(render):
    r = render("metrics.enabled=false")
    assert not r.of_kind("Service")
    c = container(r)
    assert "metrics" not in {p["name"] for p in c["ports"]}
    assert not any(a.startswith("--metrics-port") for a in c["args"])


def test_service_monitor_is_optional_and_selects_the_metrics_service(default, render):
    assert not default.of_kind("ServiceMonitor")
    r = render("metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom")
    [sm] = r.of_kind("ServiceMonitor")
    [svc] = r.of_kind("Service")
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"


def test_grafana_dashboard_ships_as_a_sidecar_config_map(render):
    r = render("grafanaDashboard.enabled=true")
    [cm] = r.of_kind("ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = yaml.safe_load(cm["data"]["ppml-operator.json"])
    assert dash["title"] and dash["panels"]


def test_every_object_carries_the_release_labels(default):
    # CRDs are byte-for-byte copies of crds/ (plus the keep annotation), so they carry none.
    for o in (o for o in default.objects if o["kind"] != "CustomResourceDefinition"):
        labels = o["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == "ppml", o["metadata"]["name"]
        assert labels.get("app.kubernetes.io/name") == "ppml-operator", o["metadata"]["name"]


def test_operator_settings_reach_its_environment(render):
    # --set would pass 2.5 as a string (helm parses only integers); a values file keeps numbers.
    c = container(
        render(values={"operator": {"reconcileIntervalSeconds": 2.5, "ledgerKeepCommitted": 7}})
    )
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["PPML_RECONCILE_INTERVAL"] == "2.5"
    assert env["PPML_LEDGER_KEEP"] == "7"
    assert "--verbose" not in c["args"]
    assert "--verbose" in container(render("operator.logLevel=debug"))["args"]


def test_the_operator_pods_wear_the_labels_trainer_policies_admit_to_the_metrics_port(default):
    # A trainer's NetworkPolicy opens its metrics port only to pods with these labels, in the
    # operator's own namespace (PPML_OPERATOR_NAMESPACE, from the pod's); the operator scrapes
    # live progress from there.
    from ppml_operator.render.common import RenderSettings
    from ppml_operator.render.trainer import operator_pods

    template = deployment(default)["spec"]["template"]
    labels = template["metadata"]["labels"]
    wanted = operator_pods(RenderSettings())["podSelector"]["matchLabels"]
    assert {k: labels.get(k) for k in wanted} == wanted
    env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
    assert env["PPML_OPERATOR_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}}
