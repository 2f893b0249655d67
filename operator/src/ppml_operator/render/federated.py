"""Render the children of a FederatedJob: a Flower SuperLink, one SuperNode per silo, a submitter.

Children (deterministic names from the job's and the silos' names):

- ``{job}-federation`` ServiceAccount (no token mounted: no pod of a federation calls the API);
- ``{job}-federation`` ConfigMap holding the runtime contract's ``FederationConfig`` as JSON,
  with exactly the noise multipliers, sampling rates and steps that were paid for;
- ``{job}-tls`` Secret: all the job's key material (its own CA, the SuperLink's certificate and
  key, every SuperNode's authentication key pair), generated in one pass by the caller
  (:mod:`ppml_operator.render.tls`), created once and never read back; each pod mounts only
  the keys it needs from it;
- NetworkPolicies: ``{job}-superlink`` admits only the job's SuperNodes on the Fleet port, its
  submitter on the Control port and the operator's pods on the ServerApp's metrics port,
  ``{job}-supernode`` and ``{job}-submitter`` let those pods reach only their
  SuperLink (and DNS), and nothing reaches them;
- ``{job}-superlink`` headless Service and Pod (ready once its port accepts connections);
- ``{job}-supernode-{client}`` Pod per silo, with the silo's data volume, node selector,
  tolerations and resources, mounting only the CA and its own key;
- ``{job}-submit`` batch/v1 Job (one attempt: a retried federation would spend privacy twice)
  that waits for the SuperLink, registers the SuperNodes' public keys, runs the Flower app and
  writes the ``FederationReport`` as its termination message.

Every pod meets the ``restricted`` Pod Security Standard. This module assembles the children
and renders the non-pod ones; names and paths live in :mod:`ppml_operator.render.federation`,
the contract config in :mod:`ppml_operator.render.federation_config`, the pods in
:mod:`ppml_operator.render.flower_pods` (re-exported here for callers).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ppml_operator.api.v1alpha1 import FederatedJob
from ppml_operator.render import delivery, tls
from ppml_operator.render.common import (
    LABEL_JOB_UID,
    RenderSettings,
    child_base,
    client_datasets,
    config_map,
    exec_namespace,
    metadata,
    pin_config,
    selector,
    service_account,
)
from ppml_operator.render.federation import (
    AUTH_DIR,
    FEDERATION,
    FLWR_HOME,
    KEYS_SECRET_ANNOTATION,
    PUBLIC_KEYS_DIR,
    ROLE_COMMAND,
    SILO_DATA_DIR,
    SUBMITTER,
    SUPERLINK,
    SUPERNODE,
    TLS_DIR,
    FederationPaid,
    across_owners,
    client_names,
    client_namespace,
    names,
    namespaces,
    superlink_address,
    superlink_dns_names,
)
from ppml_operator.render.federation_config import federation_config
from ppml_operator.render.flower_pods import (
    WAIT_FOR_SUPERLINK,
    render_submit_job,
    render_superlink_pod,
    render_supernode_pod,
)
from ppml_operator.render.trainer import operator_pods
from ppml_runtime import contract as rc
from ppml_runtime.federated import contract as fc

Obj = dict[str, Any]

__all__ = [
    "AUTH_DIR",
    "FEDERATION",
    "FLWR_HOME",
    "KEYS_SECRET_ANNOTATION",
    "PUBLIC_KEYS_DIR",
    "ROLE_COMMAND",
    "SILO_DATA_DIR",
    "SUBMITTER",
    "SUPERLINK",
    "SUPERNODE",
    "TLS_DIR",
    "WAIT_FOR_SUPERLINK",
    "FederationPaid",
    "client_names",
    "federation_config",
    "generate_key_secrets",
    "key_secret_deletions",
    "key_secret_recorded",
    "key_secret_recorded_patch",
    "names",
    "namespaces",
    "needs_key_secret",
    "render_children",
    "render_config_map",
    "render_key_secrets",
    "render_network_policies",
    "render_service",
    "render_submit_job",
    "render_superlink_pod",
    "render_supernode_pod",
    "superlink_address",
    "superlink_dns_names",
]


def render_config_map(job: Obj, config: fc.FederationConfig,
                      namespace: str | None = None) -> Obj:
    """Render the immutable ConfigMap every role reads its ``FederationConfig`` from.

    A federation across data owners has one in each namespace its pods run in (a pod mounts
    ConfigMaps of its own namespace only): the whole config on the server side, and in a data
    owner's namespace that holds only SuperNodes, the view of its own silos
    (:func:`namespace_configs`). Each pod is pinned to its own namespace's digest.
    """
    return config_map(job, names(child_base(job))["configMap"], FEDERATION,
                      fc.dump_federation_config(config), namespace=namespace)


def namespace_configs(job: Obj, config: fc.FederationConfig) -> dict[str, fc.FederationConfig]:
    """Return the config each namespace of the federation mounts, the server side's first.

    The server side (SuperLink, ServerApp, submitter) reads the whole federation; each other
    namespace, a data owner's holding only its SuperNodes, gets
    :meth:`~ppml_runtime.federated.contract.FederationConfig.silo_view` of its own silos: not
    another owner's dataset names, record counts, shards or paid steps.
    """
    server, *owners = namespaces(job)
    out = {server: config}
    for ns in owners:
        out[ns] = config.silo_view({c.name for c in config.clients
                                    if client_namespace(job, c.name) == ns})
    return out


def _secret(job: Obj, name: str, namespace: str | None, data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "immutable": True,
        "metadata": metadata(job, name, FEDERATION, namespace=namespace),
        "data": data,
    }


def render_key_secrets(job: Obj, material: tls.KeyMaterial) -> list[Obj]:
    """Render the Secrets holding the job's key material (immutable, write-once).

    Inline data: one ``{job}-tls`` Secret holding everything; each pod mounts only its own
    keys from it (volume ``items``). Across data owners: the server side's Secret (the CA, the
    SuperLink's certificate and key, every SuperNode's public key) in the operator's
    namespace, and for each silo ``{base}-tls-{client}`` in its owner's namespace holding the CA
    certificate and that silo's own private key, nothing of any other silo's.

    Parameters
    ----------
    job
        The (resolved) FederatedJob object.
    material
        The CA, the SuperLink's certificate and key, each SuperNode's key pair.

    """
    n = names(child_base(job), list(client_datasets_of(job)))
    data = material.secret_data()
    if not across_owners(job):
        return [_secret(job, n["tlsSecret"], None, data)]
    server = {k: v for k, v in data.items()
              if not (k.startswith("supernode-") and k.endswith(".key"))}
    out = [_secret(job, n["tlsSecret"], None, server)]
    for client in client_datasets_of(job):
        own = {k: data[k] for k in (tls.CA_FILE, tls.supernode_private_key(client)) if k in data}
        out.append(_secret(job, n[f"tlsSecret/{client}"], client_namespace(job, client), own))
    return out


def client_datasets_of(job: Obj) -> list[str]:
    """Return the names of the clients that are data owners, in spec order."""
    owners = set(client_datasets(job))
    return [str(c["name"]) for c in (job.get("spec") or {}).get("clients") or []
            if c["name"] in owners]


def needs_key_secret(fj: FederatedJob) -> bool:
    """Return whether the federation has key material (TLS on; authentication needs TLS)."""
    return bool(fj.spec.tls.enabled or fj.spec.authentication.enabled)


def key_secret_recorded(job: Obj) -> bool:
    """Return whether the job records that its key Secret was created (see the annotation)."""
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    return bool(annotations.get(KEYS_SECRET_ANNOTATION) == names(child_base(job))["tlsSecret"])


def key_secret_recorded_patch(job: Obj) -> Obj:
    """Return the merge patch on the job recording that its key Secrets exist."""
    return {"metadata": {"annotations": {
        KEYS_SECRET_ANNOTATION: names(child_base(job))["tlsSecret"]}}}


def key_secret_deletions(job: Obj) -> list[tuple[str, str]]:
    """Return ``(namespace, name)`` of every key Secret the job has (once recorded)."""
    n = names(child_base(job), client_datasets_of(job))
    out = [(exec_namespace(job), n["tlsSecret"])]
    if across_owners(job):
        out.extend((client_namespace(job, c), n[f"tlsSecret/{c}"])
                   for c in client_datasets_of(job))
    return out


def generate_key_secrets(job: Obj, fj: FederatedJob, now: datetime) -> list[Obj]:
    """Generate the job's key material and render its Secrets (random: never in decide).

    Parameters
    ----------
    job
        The FederatedJob object.
    fj
        The parsed job.
    now
        The clock, for the certificates' validity.

    Returns
    -------
    list of dict
        The rendered Secrets (:func:`render_key_secrets`); empty when the federation has no
        key material.

    """
    if not needs_key_secret(fj):
        return []
    material = tls.generate_key_material(
        child_base(job),
        superlink_dns_names(job) if fj.spec.tls.enabled else None,
        client_names(fj) if fj.spec.authentication.enabled else [],
        now,
    )
    return render_key_secrets(job, material)


def _dns_egress() -> Obj:
    return {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


def _in_namespaces(job: Obj, pod_selector: Obj, namespaces_: list[str]) -> list[Obj]:
    """Return NetworkPolicy peers: the selected pods in each namespace (same one: no selector)."""
    here = exec_namespace(job)
    peers: list[Obj] = []
    for ns in namespaces_:
        peer: Obj = {"podSelector": pod_selector}
        if ns != here:
            peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": ns}}
        peers.append(peer)
    return peers


def _policy(job: Obj, name: str, component: str, namespace: str, spec: Obj) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(job, name, component, namespace=namespace),
        "spec": {"podSelector": {"matchLabels": selector(job, component)},
                 "policyTypes": ["Ingress", "Egress"], **spec},
    }


def render_network_policies(job: Obj, settings: RenderSettings | None = None) -> list[Obj]:
    """Render the NetworkPolicies that confine the federation's traffic.

    The SuperLink serves the Fleet API on :data:`~ppml_runtime.contract.SUPERLINK_PORT` and its
    Control API (submit, stop, register keys, read logs) on
    :data:`~ppml_runtime.contract.SUPERLINK_CONTROL_PORT`, which has no authentication of its
    own: the policy admits only the job's SuperNodes (from their owners' namespaces, for a
    federation across data owners) on the Fleet port, and only the job's submitter on the
    Control port. The ServerApp's live gauges
    (:data:`~ppml_runtime.contract.FEDERATION_METRICS_PORT`) are for the operator: only its
    pods, in its own namespace (:func:`~ppml_operator.render.trainer.operator_pods`), reach
    that port. SuperNodes and the submitter accept no ingress and reach only their port of the
    SuperLink (and DNS).

    Returns
    -------
    list of dict
        ``{job}-superlink``, ``{job}-submitter`` (the server side's namespace) and
        ``{job}-supernode`` in every namespace SuperNodes run in.

    """
    n = names(child_base(job))
    server_ns = exec_namespace(job)
    node_namespaces = sorted({client_namespace(job, str(c["name"]))
                              for c in (job.get("spec") or {}).get("clients") or []})
    uid = {LABEL_JOB_UID: job["metadata"]["uid"]}
    supernodes = {"matchLabels": {**uid, "app.kubernetes.io/component": SUPERNODE}}
    submitter = {"matchLabels": {**uid, "app.kubernetes.io/component": SUBMITTER}}
    superlink = {"matchLabels": selector(job, SUPERLINK)}

    def to_superlink(port: int) -> Obj:
        return {"to": _in_namespaces(job, superlink, [server_ns]),
                "ports": [{"protocol": "TCP", "port": port}]}

    ingress = [{"from": _in_namespaces(job, submitter, [server_ns]),
                "ports": [{"protocol": "TCP", "port": rc.SUPERLINK_CONTROL_PORT}]},
               {"from": [operator_pods(settings or RenderSettings())],
                "ports": [{"protocol": "TCP", "port": rc.FEDERATION_METRICS_PORT}]}]
    if node_namespaces:  # an empty "from" would admit every pod: no SuperNode, no Fleet rule
        ingress.insert(0, {"from": _in_namespaces(job, supernodes, node_namespaces),
                           "ports": [{"protocol": "TCP", "port": rc.SUPERLINK_PORT}]})
    out = [
        _policy(job, n["superlinkPolicy"], SUPERLINK, server_ns, {
            "ingress": ingress, "egress": [_dns_egress()]}),
        _policy(job, n["submitterPolicy"], SUBMITTER, server_ns, {
            "ingress": [], "egress": [to_superlink(rc.SUPERLINK_CONTROL_PORT), _dns_egress()]}),
    ]
    for ns in node_namespaces:
        peer = to_superlink(rc.SUPERLINK_PORT)
        if ns != server_ns:
            peer["to"][0]["namespaceSelector"] = {
                "matchLabels": {"kubernetes.io/metadata.name": server_ns}}
        out.append(_policy(job, n["supernodePolicy"], SUPERNODE, ns, {
            "ingress": [], "egress": [peer, _dns_egress()]}))
    return out


def render_service(job: Obj) -> Obj:
    """Render the headless Service naming the SuperLink (only once it is ready)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(job, names(child_base(job))["service"], SUPERLINK),
        "spec": {
            "clusterIP": "None",
            "selector": selector(job, SUPERLINK),
            "ports": [
                {"name": "fleet", "port": rc.SUPERLINK_PORT, "targetPort": rc.SUPERLINK_PORT,
                 "protocol": "TCP"},
                {"name": "control", "port": rc.SUPERLINK_CONTROL_PORT,
                 "targetPort": rc.SUPERLINK_CONTROL_PORT, "protocol": "TCP"},
            ],
        },
    }


def render_children(
    job: Obj,
    fj: FederatedJob,
    paid: FederationPaid,
    settings: RenderSettings,
    key_secrets: Sequence[Obj] = (),
) -> list[Obj]:
    """Render every child of an admitted federation, in creation order.

    Parameters
    ----------
    job
        The FederatedJob object.
    fj
        The parsed job.
    paid
        What the budgets paid for.
    settings
        Operator-wide rendering settings.
    key_secrets
        The rendered key Secrets, included only when given (the caller generates them while
        the job does not record them as created).

    Returns
    -------
    list of dict
        ServiceAccounts, the key Secrets, ConfigMaps (one of each per namespace), the
        NetworkPolicies, the output claim (with spec.output.model), the Service, the SuperLink
        pod, the SuperNode pods, then the submitter Job.

    Raises
    ------
    InvalidSpecError
        When the runtime cannot run the spec.

    """
    config = federation_config(job, fj, paid)
    children: list[Obj] = []
    account = names(child_base(job))["serviceAccount"]
    children.extend(service_account(job, account, FEDERATION, namespace=ns)
                    for ns in namespaces(job))
    children.extend(key_secrets)
    configs = {ns: render_config_map(job, view, ns)
               for ns, view in namespace_configs(job, config).items()}
    children.extend(configs.values())
    children.extend(render_network_policies(job, settings))
    if fj.spec.output is not None and fj.spec.output.model is not None:
        children.append(delivery.render_output_claim(job, FEDERATION))
    children.append(render_service(job))
    children.append(render_superlink_pod(job, fj, settings))
    children.extend(render_supernode_pod(job, fj, c, settings) for c in fj.spec.clients)
    children.append(render_submit_job(job, fj, settings))
    job_namespace = str(job["metadata"]["namespace"])
    for ns, cm in configs.items():  # each pod to the config its own namespace mounts
        pin_config([c for c in children
                    if (c["metadata"].get("namespace") or job_namespace) == ns],
                   cm["data"][rc.CONFIG_FILE])
    return children
