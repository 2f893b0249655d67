"""Render the model's way out: operator-owned storage, the export pod and the delivery Job.

The model is the one artifact of a job on private data that may cross back to the analyst (it
is differentially private by post-processing). It travels in three steps, each with the
operator's pinned runtime image (``RenderSettings.image``), never the analyst's:

1. the trainer (rank 0) writes it into ``{base}-output``, a PersistentVolumeClaim the operator
   creates in the execution namespace (the data owner's, for a job on a PrivateDataset of
   another namespace) and nobody else mounts;
2. once the trainer completed, ``{base}-export``, a pod there, mounts that claim read-only and
   serves the four model files (``python -m ppml_runtime serve-model``); its NetworkPolicy
   admits only the job's delivery pod, from the job's namespace, on the export port;
3. ``{job}-delivery``, a batch Job in the job's namespace, mounts the analyst's claim
   (``spec.output.model.claimName``), fetches the files, checks model.safetensors against the
   SHA-256 the trainer reported, and moves them into place
   (``python -m ppml_runtime fetch-model``).

The result is addressed as KServe addresses a model on a claim: ``pvc://<claim>/<path>``.
"""

from __future__ import annotations

from typing import Any

from ppml_operator.render.common import (
    RenderSettings,
    child_base,
    container_security_context,
    exec_namespace,
    labels,
    metadata,
    pod_security_context,
    truncate_name,
)

Obj = dict[str, Any]

OUTPUT_MOUNT = "/output"
"""Where the trainer mounts the operator-owned output claim."""

MODEL_DIR = f"{OUTPUT_MOUNT}/model"
"""Where the trainer writes the model on it."""

DELIVERY_MOUNT = "/delivery"
"""Where the delivery pod mounts the analyst's claim."""

EXPORT_PORT = 9096
"""The export pod's port."""

EXPORT_TIMEOUT_SECONDS = 900
"""How long the export pod serves before it gives up (the delivery Job retries within it)."""

OUTPUT_CLAIM_SIZE = "1Gi"
"""The size the output claim requests."""

EXPORT = "model-export"
"""The ``app.kubernetes.io/component`` of the export pod and its NetworkPolicy."""

DELIVERY = "model-delivery"
"""The ``app.kubernetes.io/component`` of the delivery Job."""

LABEL_DELIVERY_FOR = "ppml.dev/delivery-for"
"""Label of the delivery pods: the UID of the job whose model they fetch (the export pod's
NetworkPolicy admits exactly these, from the job's namespace)."""


def names(job: Obj) -> dict[str, str]:
    """Return the names of the output claim, the export pod and policy, and the delivery Job."""
    base = child_base(job)
    return {
        "output": truncate_name(base, "output", 253),
        "export": truncate_name(base, "export"),
        "delivery": truncate_name(str(job["metadata"]["name"]), "delivery", 52),
    }


def model_path(job: Obj) -> str:
    """Return the directory inside the analyst's claim that receives the model."""
    model = ((job.get("spec") or {}).get("output") or {}).get("model") or {}
    return str(model.get("path") or job["metadata"]["name"])


def model_uri(job: Obj) -> str:
    """Return ``pvc://<claim>/<path>``, the delivered model's address (KServe's storageUri)."""
    model = ((job.get("spec") or {}).get("output") or {}).get("model") or {}
    return f"pvc://{model['claimName']}/{model_path(job)}"


def render_output_claim(job: Obj, component: str) -> Obj:
    """Render the operator-owned claim the trainer writes the model (and checkpoints) to."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(job, names(job)["output"], component),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": OUTPUT_CLAIM_SIZE}},
        },
    }


def _export_selector(job: Obj) -> dict[str, str]:
    return {"ppml.dev/job-uid": job["metadata"]["uid"], "app.kubernetes.io/component": EXPORT}


def render_export(job: Obj, settings: RenderSettings) -> list[Obj]:
    """Render the export pod and its NetworkPolicy, in the execution namespace."""
    n = names(job)
    pod: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata(job, n["export"], EXPORT),
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": pod_security_context(),
            "containers": [{
                "name": "export",
                "image": settings.image,
                "command": ["python", "-m", "ppml_runtime", "serve-model", "--dir", MODEL_DIR,
                            "--port", str(EXPORT_PORT), "--timeout",
                            str(EXPORT_TIMEOUT_SECONDS)],
                "ports": [{"name": "export", "containerPort": EXPORT_PORT, "protocol": "TCP"}],
                "volumeMounts": [{"name": "output", "mountPath": OUTPUT_MOUNT,
                                  "readOnly": True}],
                "securityContext": container_security_context(),
            }],
            "volumes": [{"name": "output", "persistentVolumeClaim": {
                "claimName": n["output"], "readOnly": True}}],
        },
    }
    policy: Obj = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(job, n["export"], EXPORT),
        "spec": {
            "podSelector": {"matchLabels": _export_selector(job)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{
                "from": [{
                    "namespaceSelector": {"matchLabels": {
                        "kubernetes.io/metadata.name": job["metadata"]["namespace"]}},
                    "podSelector": {"matchLabels": {
                        LABEL_DELIVERY_FOR: job["metadata"]["uid"]}},
                }],
                "ports": [{"protocol": "TCP", "port": EXPORT_PORT}],
            }],
            "egress": [],
        },
    }
    return [policy, pod]


def render_delivery(job: Obj, settings: RenderSettings, export_ip: str, sha256: str) -> Obj:
    """Render the delivery Job, in the job's namespace, fetching from the export pod."""
    n = names(job)
    model = ((job.get("spec") or {}).get("output") or {}).get("model") or {}
    pod_labels = {**labels(job, DELIVERY), LABEL_DELIVERY_FOR: job["metadata"]["uid"]}
    namespace = str(job["metadata"]["namespace"])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(job, n["delivery"], DELIVERY, namespace=namespace),
        "spec": {
            "backoffLimit": 3,
            "activeDeadlineSeconds": EXPORT_TIMEOUT_SECONDS,
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(),
                    "containers": [{
                        "name": "delivery",
                        "image": settings.image,
                        "command": ["python", "-m", "ppml_runtime", "fetch-model", "--url",
                                    f"http://{export_ip}:{EXPORT_PORT}", "--dest",
                                    f"{DELIVERY_MOUNT}/{model_path(job)}", "--expect-sha256",
                                    sha256, "--timeout", "300"],
                        "volumeMounts": [{"name": "models", "mountPath": DELIVERY_MOUNT}],
                        "securityContext": container_security_context(),
                    }],
                    "volumes": [{"name": "models", "persistentVolumeClaim": {
                        "claimName": str(model["claimName"])}}],
                },
            },
        },
    }


def export_pod(job: Obj, pods: list[Obj]) -> Obj | None:
    """Return the job's export pod among its observed pods, if it exists."""
    name = names(job)["export"]
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("name") == name and meta.get("namespace", exec_namespace(job)) == \
                exec_namespace(job):
            return pod
    return None
