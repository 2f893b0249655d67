"""Rendering a FederatedJob: children, isolation, the contract config and the per-job keys."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ppml_operator.api.errors import InvalidSpecError
from ppml_operator.api.v1alpha1 import FederatedJob
from ppml_operator.render import federated as rf
from ppml_operator.render import tls
from ppml_operator.render.trainer import Paid, RenderSettings, operator_pods
from ppml_runtime.federated import contract as fc
from ppml_testing.fedjobs import UID, make_fedjob

NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[3]
SETTINGS = RenderSettings(image="ppml-runtime:test")
CENTRAL_PAID = rf.FederationPaid(
    central=Paid(noise_multiplier="1.0", sample_rate="1.0", steps=2, delta="1e-3",
                 epsilon="3.5"))


def local_paid(n: int = 3) -> rf.FederationPaid:
    return rf.FederationPaid(clients=tuple(
        (f"silo-{i}", Paid(noise_multiplier="1.1", sample_rate="0.022271714922048998",
                           steps=90, delta="1e-5", epsilon="2.5")) for i in range(n)))


def render(job: dict[str, Any], paid: rf.FederationPaid | None = None,
           secrets: bool = True) -> list[dict[str, Any]]:
    fj = FederatedJob.model_validate(job)
    made = rf.generate_key_secrets(job, fj, NOW) if secrets else []
    return rf.render_children(job, fj, paid or rf.FederationPaid(), SETTINGS, made)


def by_name(children: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c for c in children if c["kind"] == kind}


def config_of(children: list[dict[str, Any]]) -> fc.FederationConfig:
    [cm] = by_name(children, "ConfigMap").values()
    return fc.FederationConfig.model_validate_json(cm["data"]["config.json"])


def pod_specs(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    specs = {n: p["spec"] for n, p in by_name(children, "Pod").items()}
    for name, job in by_name(children, "Job").items():
        specs[name] = job["spec"]["template"]["spec"]
    return specs


def mounts(pod_spec: dict[str, Any]) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in pod_spec["containers"][0]["volumeMounts"]}


def volume(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in pod_spec["volumes"] if v["name"] == name)


# --- the children -------------------------------------------------------------------------------


def test_a_three_silo_federation_renders_its_children_in_creation_order() -> None:
    children = render(make_fedjob().obj())
    assert [(c["kind"], c["metadata"]["name"]) for c in children] == [
        ("ServiceAccount", "digits-federation"),
        ("Secret", "digits-tls"),
        ("ConfigMap", "digits-federation"),
        ("NetworkPolicy", "digits-superlink"),
        ("NetworkPolicy", "digits-submitter"),
        ("NetworkPolicy", "digits-supernode"),
        ("Service", "digits-superlink"),
        ("Pod", "digits-superlink"),
        ("Pod", "digits-supernode-silo-0"),
        ("Pod", "digits-supernode-silo-1"),
        ("Pod", "digits-supernode-silo-2"),
        ("Job", "digits-submit"),
    ]


def test_every_child_is_labelled_and_owned_by_its_job() -> None:
    for child in render(make_fedjob().obj()):
        meta = child["metadata"]
        assert meta["namespace"] == "ns"
        assert meta["labels"]["ppml.dev/job-uid"] == UID
        assert meta["labels"]["ppml.dev/job-name"] == "digits"
        assert meta["labels"]["app.kubernetes.io/name"] == "federated-job"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "ppml-operator"
        [owner] = meta["ownerReferences"]
        assert owner == {"apiVersion": "ppml.dev/v1alpha1", "kind": "FederatedJob",
                         "name": "digits", "uid": UID, "controller": True,
                         "blockOwnerDeletion": True}


def test_every_pod_meets_the_restricted_standard_and_mounts_no_token() -> None:
    for name, spec in pod_specs(render(make_fedjob().obj())).items():
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["serviceAccountName"] == "digits-federation"
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["readOnlyRootFilesystem"] is True
            assert mounts({"containers": [container]})["/tmp"] == "tmp"


@pytest.mark.parametrize(("role", "pod", "args"), [
    ("superlink", "digits-superlink",
     ["superlink", "--config", "/etc/ppml/config.json", "--host", "0.0.0.0", "--port", "9092",
      "--control-port", "9093"]),
    ("supernode", "digits-supernode-silo-1",
     ["supernode", "--config", "/etc/ppml/config.json", "--client", "silo-1", "--data-dir",
      "/tmp/silo-data"]),
    ("submitter", "digits-submit",
     ["submit", "--config", "/etc/ppml/config.json", "--flwr-home", "/tmp/flwr"]),
])
def test_each_role_runs_the_runtime_entry_point_with_the_mounted_config(
    role: str, pod: str, args: list[str]
) -> None:
    spec = pod_specs(render(make_fedjob().obj()))[pod]
    container = spec["containers"][0]
    assert container["command"] == ["python", "-m", "ppml_runtime", *args]
    assert container["image"] == "ppml-runtime:test"
    assert mounts(spec)["/etc/ppml"] == "config"
    assert volume(spec, "config") == {"name": "config",
                                      "configMap": {"name": "digits-federation"}}


def test_the_superlink_is_reached_through_a_headless_service_once_its_port_is_ready() -> None:
    children = render(make_fedjob().obj())
    service = by_name(children, "Service")["digits-superlink"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"ppml.dev/job-uid": UID,
                                           "app.kubernetes.io/component": "superlink"}
    assert service["spec"]["ports"] == [
        {"name": "fleet", "port": 9092, "targetPort": 9092, "protocol": "TCP"},
        {"name": "control", "port": 9093, "targetPort": 9093, "protocol": "TCP"}]
    pod = by_name(children, "Pod")["digits-superlink"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "superlink"
    assert pod["spec"]["containers"][0]["readinessProbe"]["tcpSocket"] == {"port": 9092}
    assert config_of(children).superlink_address == "digits-superlink.ns.svc.cluster.local:9092"


def test_each_silo_gets_its_own_data_volume_placement_and_resources() -> None:
    job = (make_fedjob()
           .client(0, data={"source": "Volume", "numRecords": 500,
                            "volume": {"claimName": "hospital-a", "path": "x.csv",
                                       "format": "Csv"}},
                   nodeSelector={"site": "a"}, resources={"limits": {"cpu": "2"}},
                   tolerations=[{"key": "silo", "operator": "Equal", "value": "a",
                                 "effect": "NoSchedule"}])
           .obj())
    specs = pod_specs(render(job))
    a, b = specs["digits-supernode-silo-0"], specs["digits-supernode-silo-1"]
    assert volume(a, "data")["persistentVolumeClaim"] == {"claimName": "hospital-a",
                                                          "readOnly": True}
    assert mounts(a)["/data"] == "data"
    assert a["nodeSelector"] == {"site": "a"}
    assert a["tolerations"][0]["value"] == "a"
    assert a["containers"][0]["resources"] == {"limits": {"cpu": "2"}}
    assert "/data" not in mounts(b) and "nodeSelector" not in b and "resources" not in \
        b["containers"][0]
    cfg = config_of(render(job)).client("silo-0")
    assert cfg.data.volume is not None and cfg.data.volume.path == "/data/x.csv"
    assert cfg.data.num_records == 400  # the training split: 500 minus ceil(500 * 0.2)


def items(pod_spec: dict[str, Any], name: str) -> dict[str, str]:
    """The ``{Secret key: file}`` a pod's secret volume mounts from the job's key Secret."""
    secret = volume(pod_spec, name)["secret"]
    assert secret["secretName"] == "digits-tls"
    return {i["key"]: i["path"] for i in secret["items"]}


def test_each_pod_mounts_only_its_own_keys_from_the_one_key_secret() -> None:
    specs = pod_specs(render(make_fedjob().obj()))
    link = specs["digits-superlink"]
    assert items(link, "tls") == {"ca.crt": "ca.crt", "tls.crt": "tls.crt", "tls.key": "tls.key"}
    assert {v["name"] for v in link["volumes"]} == {"config", "tls", "tmp"}
    for i in range(3):
        node = specs[f"digits-supernode-silo-{i}"]
        assert items(node, "tls") == {"ca.crt": "ca.crt"}
        assert items(node, "auth") == {f"supernode-silo-{i}.key": "auth.key"}
        assert mounts(node)["/etc/ppml-auth"] == "auth"
    submit = specs["digits-submit"]
    assert items(submit, "tls") == {"ca.crt": "ca.crt"}
    assert items(submit, "public-keys") == {
        f"supernode-silo-{i}.pub": f"silo-{i}.pub" for i in range(3)}
    assert mounts(submit)["/etc/ppml-auth-public"] == "public-keys"
    # Every key a pod mounts is in the Secret.
    [secret] = by_name(render(make_fedjob().obj()), "Secret").values()
    for spec in specs.values():
        for v in spec["volumes"]:
            if "secret" in v:
                assert {i["key"] for i in v["secret"]["items"]} <= set(secret["data"])


def test_the_submitter_runs_once_waits_for_the_superlink_and_reports_in_its_termination_message(
) -> None:
    job = make_fedjob().with_spec(activeDeadlineSeconds=900).obj()
    submit = by_name(render(job), "Job")["digits-submit"]
    assert submit["spec"]["backoffLimit"] == 0
    assert submit["spec"]["activeDeadlineSeconds"] == 900
    pod = submit["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    [wait] = pod["initContainers"]
    # The submitter waits for, and then dials, the Control port only.
    assert wait["command"][-3:] == ["digits-superlink.ns.svc.cluster.local", "9093", "600"]
    container = pod["containers"][0]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "File"


def test_network_policies_let_supernodes_reach_only_their_superlink_and_nothing_else_in() -> None:
    policies = by_name(render(make_fedjob().obj()), "NetworkPolicy")
    link = policies["digits-superlink"]["spec"]
    assert link["podSelector"]["matchLabels"] == {"ppml.dev/job-uid": UID,
                                                  "app.kubernetes.io/component": "superlink"}
    fleet, control, metrics = link["ingress"]
    # The Fleet port admits exactly the job's SuperNodes; the Control port (no authentication
    # of its own in Flower 1.42) exactly its submitter; the ServerApp's live gauges exactly the
    # operator's pods, in the operator's namespace.
    assert fleet == {"from": [{"podSelector": {"matchLabels": {
        "ppml.dev/job-uid": UID, "app.kubernetes.io/component": "supernode"}}}],
        "ports": [{"protocol": "TCP", "port": 9092}]}
    assert control == {"from": [{"podSelector": {"matchLabels": {
        "ppml.dev/job-uid": UID, "app.kubernetes.io/component": "submitter"}}}],
        "ports": [{"protocol": "TCP", "port": 9093}]}
    assert metrics == {"from": [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ppml-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ppml-operator",
                                        "app.kubernetes.io/component": "operator"}}}],
        "ports": [{"protocol": "TCP", "port": 9097}]}
    for name, port in (("digits-supernode", 9092), ("digits-submitter", 9093)):
        spec = policies[name]["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        assert spec["ingress"] == []
        to_link, dns = spec["egress"]
        assert to_link["to"] == [{"podSelector": {"matchLabels": {
            "ppml.dev/job-uid": UID, "app.kubernetes.io/component": "superlink"}}}]
        assert to_link["ports"] == [{"protocol": "TCP", "port": port}]
        assert {p["port"] for p in dns["ports"]} == {53}


def test_no_policy_rule_admits_every_pod_even_for_a_job_without_clients() -> None:
    """An empty ``from`` admits every pod: no rule may render one (fail closed)."""
    job = make_fedjob().obj()
    bare = {**job, "spec": {**job["spec"], "clients": []}}  # the CRD refuses it; render anyway
    for policy in [*rf.render_network_policies(job), *rf.render_network_policies(bare)]:
        spec = policy["spec"]
        assert all(rule["from"] for rule in spec["ingress"]), policy
        assert all(rule.get("to", True) for rule in spec["egress"]), policy
    [link] = [p for p in rf.render_network_policies(bare) if p["metadata"]["name"].endswith(
        "-superlink")]
    assert [r["ports"][0]["port"] for r in link["spec"]["ingress"]] == [9093, 9097]


def test_the_rendered_config_leaves_the_gauges_on_the_port_the_policy_opens() -> None:
    """metricsPort stays unset (a SuperNode image predating it still reads the config)."""
    config = config_of(render(make_fedjob().obj()))
    assert config.metrics_port is None and config.metrics_port_value == 9097
    [link] = [p for p in by_name(render(make_fedjob().obj()), "Pod").values()
              if p["metadata"]["name"] == "digits-superlink"]
    assert {"name": "metrics", "containerPort": 9097, "protocol": "TCP"} in link["spec"][
        "containers"][0]["ports"]


def test_only_the_operator_in_its_own_namespace_reaches_the_federation_gauges() -> None:
    """The metrics port admits the operator's pods of the configured namespace, on that port."""
    settings = RenderSettings(image="ppml-runtime:test", operator_namespace="ops")
    policies = {p["metadata"]["name"]: p["spec"]
                for p in rf.render_network_policies(make_fedjob().obj(), settings)}
    rules = [r for r in policies["digits-superlink"]["ingress"]
             if {"protocol": "TCP", "port": 9097} in r["ports"]]
    assert rules == [{"from": [operator_pods(settings)],
                      "ports": [{"protocol": "TCP", "port": 9097}]}]
    assert rules[0]["from"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "ops"}}
    for name in ("digits-supernode", "digits-submitter"):
        assert policies[name]["ingress"] == []  # nothing else serves gauges


def test_tls_and_authentication_off_render_no_secrets_and_an_insecure_config() -> None:
    children = render(make_fedjob().tls(False).auth(False).obj())
    assert by_name(children, "Secret") == {}
    cfg = config_of(children)
    assert cfg.tls is None and cfg.auth is None
    for spec in pod_specs(children).values():
        assert {v["name"] for v in spec["volumes"]} == {"config", "tmp"}


# --- the contract config ------------------------------------------------------------------------


def test_the_config_carries_the_spec_and_exactly_what_central_dp_paid_for() -> None:
    job = make_fedjob().rounds(2).secagg(numShares=3, reconstructionThreshold=2).central().obj()
    cfg = config_of(render(job, CENTRAL_PAID))
    assert cfg.job.uid == UID and cfg.rounds == 2
    assert [c.name for c in cfg.clients] == ["silo-0", "silo-1", "silo-2"]
    assert all(c.data.num_records == 479 for c in cfg.clients)  # 599 - ceil(599 * 0.2)
    assert [(c.partition.index, c.partition.count) for c in cfg.clients if c.partition] == [
        (0, 3), (1, 3), (2, 3)]
    central = cfg.privacy.central
    assert central is not None
    assert (central.noise_multiplier, central.clients_per_round, central.charged_epsilon) == (
        "1.0", 3, "3.5")
    assert cfg.clipping_side == "ClientSide"  # SecAgg+: the server never sees an update
    assert cfg.weighting == "Uniform"
    assert cfg.secure_aggregation is not None and cfg.secure_aggregation.num_shares == 3
    assert cfg.tls is not None and cfg.tls.ca_file == "/etc/ppml-tls/ca.crt"
    assert cfg.auth is not None and cfg.auth.public_key_files == [
        f"/etc/ppml-auth-public/silo-{i}.pub" for i in range(3)]


def test_local_dp_configures_each_silo_with_its_own_paid_dp_sgd_parameters() -> None:
    job = make_fedjob().local(budgets=["a", "b", "c"]).obj()
    cfg = config_of(render(job, local_paid()))
    assert cfg.privacy.mode == "Local" and cfg.weighting == "Uniform"
    for entry in cfg.clients:
        assert entry.privacy is not None
        assert (entry.privacy.noise_multiplier, entry.privacy.steps, entry.privacy.accountant,
                entry.privacy.max_grad_norm) == ("1.1", 90, "rdp", "1.0")


@pytest.mark.parametrize(("situation", "builder", "field"), [
    ("authentication without TLS", lambda b: b.tls(False), "spec.authentication.enabled"),
    ("adaptive clipping, which the runtime does not run",
     lambda b: b.central(clipping="Adaptive"), "spec.privacy.clipping"),
])
def test_specs_the_runtime_cannot_run_are_refused_naming_the_field(
    situation: str, builder: Any, field: str
) -> None:
    job = builder(make_fedjob()).obj()
    with pytest.raises(InvalidSpecError) as err:
        render(job, CENTRAL_PAID, secrets=False)
    assert err.value.field == field


# --- the keys -----------------------------------------------------------------------------------


def _secret_files(secret: dict[str, Any]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


def test_the_superlink_certificate_is_signed_by_the_jobs_ca_for_the_service_names() -> None:
    secret = by_name(render(make_fedjob().obj()), "Secret")["digits-tls"]
    files = _secret_files(secret)
    ca = x509.load_pem_x509_certificate(files["ca.crt"])
    cert = x509.load_pem_x509_certificate(files["tls.crt"])
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "digits-superlink", "digits-superlink.ns", "digits-superlink.ns.svc",
        "digits-superlink.ns.svc.cluster.local", "localhost"]
    # Flower's SuperExec and ServerApp dial the SuperLink on loopback inside its pod.
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    key = serialization.load_pem_private_key(files["tls.key"], None)
    assert key.public_key() == cert.public_key()
    assert cert.not_valid_before_utc < NOW < cert.not_valid_after_utc


def test_supernode_keys_are_openssh_ec_keys_flower_accepts_and_distinct_per_silo() -> None:
    [secret] = by_name(render(make_fedjob().obj()), "Secret").values()
    files = _secret_files(secret)
    publics = set()
    for i in range(3):
        private = serialization.load_ssh_private_key(files[f"supernode-silo-{i}.key"], None)
        public = serialization.load_ssh_public_key(files[f"supernode-silo-{i}.pub"])
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert private.public_key() == public
        publics.add(files[f"supernode-silo-{i}.pub"])
    assert len(publics) == 3


def test_all_key_material_is_in_one_immutable_secret_and_nothing_else() -> None:
    [secret] = by_name(render(make_fedjob().obj()), "Secret").values()
    assert secret["metadata"]["name"] == "digits-tls"
    assert secret["immutable"] is True
    assert sorted(secret["data"]) == sorted(
        ["ca.crt", "tls.crt", "tls.key"]
        + [f"supernode-silo-{i}.{ext}" for i in range(3) for ext in ("key", "pub")])


def test_tls_without_authentication_holds_only_the_ca_and_the_superlink_pair() -> None:
    children = render(make_fedjob().auth(False).obj())
    [secret] = by_name(children, "Secret").values()
    assert sorted(secret["data"]) == ["ca.crt", "tls.crt", "tls.key"]
    node = pod_specs(children)["digits-supernode-silo-0"]
    assert {v["name"] for v in node["volumes"]} == {"config", "tls", "tmp"}


def test_every_job_gets_its_own_ca() -> None:
    job = make_fedjob().obj()
    fj = FederatedJob.model_validate(job)
    [first] = rf.generate_key_secrets(job, fj, NOW)
    [second] = rf.generate_key_secrets(job, fj, NOW)
    assert first["data"]["ca.crt"] != second["data"]["ca.crt"]
    off = make_fedjob().tls(False).auth(False).obj()
    assert rf.generate_key_secrets(off, FederatedJob.model_validate(off), NOW) == []
    assert tls.service_dns_names("s", "n")[-1] == "s.n.svc.cluster.local"


@pytest.mark.parametrize(("situation", "annotations", "recorded"), [
    ("no annotation", None, False),
    ("the annotation names the job's key Secret", {"ppml.dev/keys-secret": "digits-tls"}, True),
    ("the annotation names another Secret", {"ppml.dev/keys-secret": "other-tls"}, False),
])
def test_the_job_records_its_key_secret_in_an_annotation(
    situation: str, annotations: dict[str, str] | None, recorded: bool
) -> None:
    job = make_fedjob().obj()
    if annotations is not None:
        job["metadata"]["annotations"] = annotations
    assert rf.key_secret_recorded(job) is recorded
    patched = {**job, "metadata": {**job["metadata"], **rf.key_secret_recorded_patch(job)[
        "metadata"]}}
    assert rf.key_secret_recorded(patched)


# --- the examples -------------------------------------------------------------------------------

EXAMPLES = sorted((REPO / "examples" / "federated").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_federated_example_renders_a_config_the_runtime_accepts(path: Path) -> None:
    from ppml_operator.reconcile import federated

    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc.get("kind") != "FederatedJob":
            continue
        doc["metadata"].update({"namespace": "ns", "uid": UID, "generation": 1})
        price = federated.price(doc)
        assert isinstance(price, federated.FederatedPrice), price
        children = render(doc, price.paid)
        cfg = config_of(children)
        assert cfg.rounds == doc["spec"]["rounds"]
        assert json.loads(fc.dump_federation_config(cfg))["job"]["uid"] == UID
