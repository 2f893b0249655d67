"""Shared pieces of every rendered child: names, labels, owner references, security contexts.

Rendering is pure: plain dicts in, plain dicts out, no client and no clock. Every child carries
the ``app.kubernetes.io/*`` labels, ``ppml.dev/job-name``, ``ppml.dev/job-namespace`` and
``ppml.dev/job-uid`` (so a recreated job of the same name never adopts its predecessor's pods).
A child in the job's own namespace has a controller owner reference to its job, so the garbage
collector removes it with the job. A child in a data owner's namespace (a job on a
PrivateDataset of another namespace: ``reconcile/dataset.py``) cannot have one (owner references
never cross namespaces): the job's finalizer deletes it by label (``reconcile/lifecycle.py``,
``decide_deletion``), and its name starts with the job's namespace, so jobs of the same name in
two analysts' namespaces never collide.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ppml_runtime import contract as rc

Obj = dict[str, Any]

DEFAULT_COMMAND = ("python", "-m", "ppml_runtime", "train", "--config", rc.CONFIG_PATH)
"""The trainer container's command (federation pods take their role's arguments instead)."""


@dataclass(frozen=True)
class RenderSettings:
    """Operator-wide settings that shape the rendered children of every kind."""

    image: str = "ghcr.io/ppml-dev/ppml-runtime:0.1.0"
    command: tuple[str, ...] = DEFAULT_COMMAND
    extra_env: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    operator_namespace: str = "ppml-system"
    """The namespace of the operator's pods (the only peers that may scrape trainer metrics)."""

MANAGED_BY = "ppml-operator"
"""The ``app.kubernetes.io/managed-by`` value of every child."""

LABEL_JOB_NAME = "ppml.dev/job-name"
"""Label naming the job a child belongs to."""

LABEL_JOB_UID = "ppml.dev/job-uid"
"""Label carrying the UID of the job a child belongs to."""

LABEL_JOB_NAMESPACE = "ppml.dev/job-namespace"
"""Label naming the namespace of the job a child belongs to (the analyst's, for a remote one)."""

EXEC_NAMESPACE = "ppml.dev/exec-namespace"
"""Key of the in-memory resolved job's metadata naming where its children run.

Set only on the effective job ``reconcile/dataset.py`` builds (never written to the API server):
a job on another namespace's PrivateDataset runs its pods in that namespace.
"""


DATASET = "ppml.dev/dataset"
"""Key of the in-memory resolved job's metadata naming its PrivateDataset (``ns/name``): the
resolved spec carries the dataset's data and budget instead of ``datasetRef``."""


CLIENT_DATASETS = "ppml.dev/client-datasets"
"""Key of the in-memory resolved FederatedJob's metadata describing its datasetRef clients.

``{client: {"namespace", "dataset", "budget", "data"}}``: where each silo's PrivateDataset is
(its SuperNode runs there), the budget that pays for it and the data the owner declared. Set
only by ``reconcile/dataset.py`` (never written to the API server); the spec keeps the
``datasetRef`` the user wrote.
"""


def client_datasets(job: Obj) -> dict[str, Obj]:
    """Return the resolved datasetRef clients of a FederatedJob (:data:`CLIENT_DATASETS`)."""
    return dict(job["metadata"].get(CLIENT_DATASETS) or {})


def budget_key(namespace: str, name: str, job_namespace: str) -> str:
    """Return how a charge names its budget: ``name`` in the job's namespace, else ``ns/name``."""
    return name if namespace == job_namespace else f"{namespace}/{name}"


def split_budget_key(key: str, default_namespace: str) -> tuple[str, str]:
    """Return ``(namespace, name)`` of a charge's budget key (:func:`budget_key`)."""
    namespace, _, name = key.rpartition("/")
    return (namespace or default_namespace), name


def exec_namespace(job: Obj) -> str:
    """Return the namespace the job's children are rendered into."""
    meta = job["metadata"]
    return str(meta.get(EXEC_NAMESPACE) or meta["namespace"])


def child_base(job: Obj) -> str:
    """Return the base of the job's child names: its name, prefixed by its namespace if remote."""
    meta = job["metadata"]
    if exec_namespace(job) == meta["namespace"]:
        return str(meta["name"])
    return f"{meta['namespace']}-{meta['name']}"

NONROOT_UID = 65532
"""The user and group the runtime containers run as (the distroless ``nonroot`` user)."""


def labels(job: Obj, component: str) -> dict[str, str]:
    """Return the labels of a child of ``job`` playing ``component``.

    Parameters
    ----------
    job
        The owning job object (its metadata gives name and uid).
    component
        The child's role, e.g. ``trainer``.

    Returns
    -------
    dict
        The label set.

    """
    meta = job["metadata"]
    return {
        "app.kubernetes.io/name": _app_name(job),
        "app.kubernetes.io/instance": meta["name"],
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_JOB_NAME: meta["name"],
        LABEL_JOB_NAMESPACE: meta["namespace"],
        LABEL_JOB_UID: meta["uid"],
    }


def selector(job: Obj, component: str) -> dict[str, str]:
    """Return the label selector matching the pods of ``job`` playing ``component``."""
    return {
        LABEL_JOB_UID: job["metadata"]["uid"],
        "app.kubernetes.io/component": component,
    }


def _app_name(job: Obj) -> str:
    kind = str(job.get("kind", "PrivateTrainingJob"))
    return {"PrivateTrainingJob": "private-training-job", "FederatedJob": "federated-job"}.get(
        kind, kind.lower()
    )


def owner_reference(job: Obj) -> Obj:
    """Return the controller owner reference pointing at ``job``."""
    meta = job["metadata"]
    return {
        "apiVersion": job.get("apiVersion", "ppml.dev/v1alpha1"),
        "kind": job.get("kind", "PrivateTrainingJob"),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(job: Obj, name: str, component: str, *, namespace: str | None = None) -> Obj:
    """Return the metadata of a child: name, namespace, labels and the owner reference.

    The namespace is the job's execution namespace unless given; the owner reference is set
    only when the child lives in the job's own namespace.
    """
    ns = namespace or exec_namespace(job)
    meta: Obj = {"name": name, "namespace": ns, "labels": labels(job, component)}
    if ns == job["metadata"]["namespace"]:
        meta["ownerReferences"] = [owner_reference(job)]
    return meta


CLUSTER_DNS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
"""The cluster DNS's pods (CoreDNS and kube-dns both carry ``k8s-app: kube-dns``)."""


def dns_egress() -> Obj:
    """Return the egress rule admitting DNS to the cluster DNS only (port 53, UDP and TCP).

    Any other destination on port 53 is refused: a pod that touches private records must not
    tunnel them out through a resolver of its choosing.
    """
    return {"to": [CLUSTER_DNS],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


def pod_security_context() -> Obj:
    """Return the pod-level security context required by the ``restricted`` standard."""
    return {
        "runAsNonRoot": True,
        "runAsUser": NONROOT_UID,
        "runAsGroup": NONROOT_UID,
        "fsGroup": NONROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Obj:
    """Return the container-level security context required by the ``restricted`` standard."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": NONROOT_UID,
        "runAsGroup": NONROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def service_account(job: Obj, name: str, component: str, *,
                    namespace: str | None = None) -> Obj:
    """Return a dedicated ServiceAccount whose token is not mounted by default."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(job, name, component, namespace=namespace),
        "automountServiceAccountToken": False,
    }


NAME_HASH_LENGTH = 8
"""Hex digits of the job name's hash kept in a shortened child name."""


def truncate_name(base: str, suffix: str, limit: int = 63) -> str:
    """Return ``base-suffix``, shortened to ``limit`` characters with a hash of ``base``.

    A name that fits is left alone. A longer one keeps a prefix of ``base`` and adds a stable
    hash of the whole ``base`` (``{prefix}-{hash}-{suffix}``), so two jobs whose names share
    their first characters never render the same child name (and never adopt each other's).
    """
    name = f"{base}-{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:NAME_HASH_LENGTH]
    keep = limit - len(suffix) - NAME_HASH_LENGTH - 2
    return f"{base[:keep].rstrip('-.')}-{digest}-{suffix}"


def pin_config(children: list[Obj], config_text: str) -> list[Obj]:
    """Pin every container of the children to the config text that was rendered and paid for.

    Each container (init containers too) of every Pod and Job pod template gets
    ``PPML_CONFIG_SHA256``; pod templates and pod env cannot be edited after creation, and the
    runtime refuses a config file whose digest differs (``ppml_runtime.contract.
    read_pinned_config``), so replacing the ConfigMap (an ``edit`` user could: delete and
    recreate it) cannot make a pod run with other numbers than those charged.
    """
    digest = {"name": rc.ENV_CONFIG_SHA256, "value": rc.config_digest(config_text)}
    for child in children:
        if child["kind"] == "Pod":
            pod_spec = child["spec"]
        elif child["kind"] == "Job":
            pod_spec = child["spec"]["template"]["spec"]
        else:
            continue
        for container in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
            container.setdefault("env", []).append(dict(digest))
    return children


def config_map(job: Obj, name: str, component: str, config_text: str, *,
               namespace: str | None = None) -> Obj:
    """Render an immutable ConfigMap holding a runtime config (``config.json``)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(job, name, component, namespace=namespace),
        "immutable": True,
        "data": {rc.CONFIG_FILE: config_text},
    }

