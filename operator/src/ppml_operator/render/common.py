"""Shared pieces of every rendered child: names, labels, owner references, security contexts.

Rendering is pure: plain dicts in, plain dicts out, no client and no clock. Every child carries
the ``app.kubernetes.io/*`` labels, ``ppml.dev/job-name`` and ``ppml.dev/job-uid`` (so a
recreated job of the same name never adopts its predecessor's pods), and a controller owner
reference to its job, so the garbage collector removes it with the job.
"""

from __future__ import annotations

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

MANAGED_BY = "ppml-operator"
"""The ``app.kubernetes.io/managed-by`` value of every child."""

LABEL_JOB_NAME = "ppml.dev/job-name"
"""Label naming the job a child belongs to."""

LABEL_JOB_UID = "ppml.dev/job-uid"
"""Label carrying the UID of the job a child belongs to."""

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


def metadata(job: Obj, name: str, component: str) -> Obj:
    """Return the metadata of a child: name, namespace, labels and the owner reference."""
    return {
        "name": name,
        "namespace": job["metadata"]["namespace"],
        "labels": labels(job, component),
        "ownerReferences": [owner_reference(job)],
    }


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


def service_account(job: Obj, name: str, component: str) -> Obj:
    """Return a dedicated ServiceAccount whose token is not mounted by default."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(job, name, component),
        "automountServiceAccountToken": False,
    }


def truncate_name(base: str, suffix: str, limit: int = 63) -> str:
    """Return ``base-suffix`` cut to ``limit`` characters (DNS label length by default)."""
    name = f"{base}-{suffix}"
    if len(name) <= limit:
        return name
    keep = limit - len(suffix) - 1
    return f"{base[:keep].rstrip('-')}-{suffix}"
