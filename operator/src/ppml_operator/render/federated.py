"""Render the children of a FederatedJob: a Flower SuperLink, one SuperNode per silo, a submitter.

Children (deterministic names from the job's and the silos' names):

- ``{job}-federation`` ServiceAccount (no token mounted: no pod of a federation calls the API);
- ``{job}-federation`` ConfigMap holding the runtime contract's ``FederationConfig`` as JSON,
  with exactly the noise multipliers, sampling rates and steps that were paid for;
- ``{job}-tls`` Secret: all the job's key material (its own CA, the SuperLink's certificate and
  key, every SuperNode's authentication key pair), generated in one pass by the caller
  (:mod:`ppml_operator.render.tls`), created once and never read back; each pod mounts only
  the keys it needs from it;
- NetworkPolicies: ``{job}-superlink`` admits only the job's SuperNodes and submitter on the
  SuperLink port, ``{job}-supernode`` and ``{job}-submitter`` let those pods reach only their
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

from datetime import datetime
from typing import Any

from ppml_operator.api.v1alpha1 import FederatedJob
from ppml_operator.render import tls
from ppml_operator.render.common import (
    RenderSettings,
    config_map,
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
    client_names,
    names,
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
    "generate_key_secret",
    "key_secret_recorded",
    "key_secret_recorded_patch",
    "names",
    "needs_key_secret",
    "render_children",
    "render_config_map",
    "render_key_secret",
    "render_network_policies",
    "render_service",
    "render_submit_job",
    "render_superlink_pod",
    "render_supernode_pod",
    "superlink_address",
    "superlink_dns_names",
]


def render_config_map(job: Obj, config: fc.FederationConfig) -> Obj:
    """Render the immutable ConfigMap every role reads its ``FederationConfig`` from."""
    return config_map(job, names(job["metadata"]["name"])["configMap"], FEDERATION,
                      fc.dump_federation_config(config))


def render_key_secret(job: Obj, material: tls.KeyMaterial) -> Obj:
    """Render the one Secret holding all of the job's key material (immutable, write-once).

    Parameters
    ----------
    job
        The FederatedJob object.
    material
        The CA, the SuperLink's certificate and key, each SuperNode's key pair.

    Returns
    -------
    dict
        The ``{job}-tls`` Secret; each pod mounts only its own keys from it (volume ``items``).

    """
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "immutable": True,
        "metadata": metadata(job, names(job["metadata"]["name"])["tlsSecret"], FEDERATION),
        "data": material.secret_data(),
    }


def needs_key_secret(fj: FederatedJob) -> bool:
    """Return whether the federation has key material (TLS on; authentication needs TLS)."""
    return bool(fj.spec.tls.enabled or fj.spec.authentication.enabled)


def key_secret_recorded(job: Obj) -> bool:
    """Return whether the job records that its key Secret was created (see the annotation)."""
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    return bool(annotations.get(KEYS_SECRET_ANNOTATION) == names(job["metadata"]["name"])[
        "tlsSecret"])


def key_secret_recorded_patch(job: Obj) -> Obj:
    """Return the merge patch on the job recording that its key Secret exists."""
    return {"metadata": {"annotations": {
        KEYS_SECRET_ANNOTATION: names(job["metadata"]["name"])["tlsSecret"]}}}


def generate_key_secret(job: Obj, fj: FederatedJob, now: datetime) -> Obj | None:
    """Generate the job's key material and render its Secret (random: never in decide).

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
    dict or None
        The rendered Secret, or None when the federation has no key material.

    """
    if not needs_key_secret(fj):
        return None
    material = tls.generate_key_material(
        job["metadata"]["name"],
        superlink_dns_names(job) if fj.spec.tls.enabled else None,
        client_names(fj) if fj.spec.authentication.enabled else [],
        now,
    )
    return render_key_secret(job, material)


def _dns_egress() -> Obj:
    return {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


def _to_superlink(job: Obj) -> Obj:
    return {
        "to": [{"podSelector": {"matchLabels": selector(job, SUPERLINK)}}],
        "ports": [{"protocol": "TCP", "port": rc.SUPERLINK_PORT}],
    }


def render_network_policies(job: Obj) -> list[Obj]:
    """Render the NetworkPolicies that confine the federation's traffic.

    Returns
    -------
    list of dict
        ``{job}-superlink`` (ingress only from the job's SuperNodes and submitter, on the
        SuperLink port; no egress but DNS), ``{job}-supernode`` and ``{job}-submitter`` (no
        ingress; egress only to the SuperLink port and DNS).

    """
    n = names(job["metadata"]["name"])
    uid = job["metadata"]["uid"]
    peers = {
        "matchLabels": {"ppml.dev/job-uid": uid},
        "matchExpressions": [
            {
                "key": "app.kubernetes.io/component",
                "operator": "In",
                "values": [SUPERNODE, SUBMITTER],
            }
        ],
    }
    superlink = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(job, n["superlinkPolicy"], SUPERLINK),
        "spec": {
            "podSelector": {"matchLabels": selector(job, SUPERLINK)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [{"podSelector": peers}],
                    "ports": [{"protocol": "TCP", "port": rc.SUPERLINK_PORT}],
                }
            ],
            "egress": [_dns_egress()],
        },
    }
    out = [superlink]
    for component, key in ((SUPERNODE, "supernodePolicy"), (SUBMITTER, "submitterPolicy")):
        out.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": metadata(job, n[key], component),
                "spec": {
                    "podSelector": {"matchLabels": selector(job, component)},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [],
                    "egress": [_to_superlink(job), _dns_egress()],
                },
            }
        )
    return out


def render_service(job: Obj) -> Obj:
    """Render the headless Service naming the SuperLink (only once it is ready)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(job, names(job["metadata"]["name"])["service"], SUPERLINK),
        "spec": {
            "clusterIP": "None",
            "selector": selector(job, SUPERLINK),
            "ports": [
                {
                    "name": "superlink",
                    "port": rc.SUPERLINK_PORT,
                    "targetPort": rc.SUPERLINK_PORT,
                    "protocol": "TCP",
                }
            ],
        },
    }



def render_children(
    job: Obj,
    fj: FederatedJob,
    paid: FederationPaid,
    settings: RenderSettings,
    key_secret: Obj | None = None,
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
    key_secret
        The rendered key Secret, included only when given (the caller generates it while the
        Secret is not known to exist).

    Returns
    -------
    list of dict
        ServiceAccount, the key Secret, ConfigMap, NetworkPolicies, the Service, the SuperLink pod,
        the SuperNode pods, then the submitter Job.

    Raises
    ------
    InvalidSpecError
        When the runtime cannot run the spec.

    """
    n = names(job["metadata"]["name"])
    config = federation_config(job, fj, paid)
    children: list[Obj] = [service_account(job, n["serviceAccount"], FEDERATION)]
    if key_secret is not None:
        children.append(key_secret)
    config_map_ = render_config_map(job, config)
    children.append(config_map_)
    children.extend(render_network_policies(job))
    children.append(render_service(job))
    children.append(render_superlink_pod(job, fj, settings))
    children.extend(render_supernode_pod(job, fj, c, settings) for c in fj.spec.clients)
    children.append(render_submit_job(job, fj, settings))
    return pin_config(children, config_map_["data"][rc.CONFIG_FILE])
