"""The pods of a FederatedJob: the SuperLink, one SuperNode per silo, and the submitter Job.

Each runs ``python -m ppml_runtime <role>`` with the mounted ``FederationConfig``, meets the
``restricted`` Pod Security Standard and mounts no ServiceAccount token. All key material is in
one Secret; each pod mounts only the keys it needs from it (secret volume ``items``): the
SuperLink the CA certificate and its own certificate and key; a SuperNode the CA certificate and
its own private key; the submitter the CA certificate and every SuperNode's public key (to
register them). The submitter runs once
(a retried federation would spend privacy again), after an init container waited for the
SuperLink's port, and writes the ``FederationReport`` as its termination message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ppml_operator.api.v1alpha1 import FederatedJob
from ppml_operator.api.v1alpha1.federated import FederatedClient
from ppml_operator.render import delivery, tls
from ppml_operator.render.common import (
    RenderSettings,
    child_base,
    container_security_context,
    metadata,
    pod_security_context,
)
from ppml_operator.render.federation import (
    AUTH_DIR,
    FLWR_HOME,
    PUBLIC_KEYS_DIR,
    ROLE_COMMAND,
    SILO_DATA_DIR,
    SUBMITTER,
    SUPERLINK,
    SUPERNODE,
    TLS_DIR,
    across_owners,
    client_data,
    client_names,
    client_namespace,
    names,
    superlink_host,
)
from ppml_operator.render.trainer import DATA_MOUNT
from ppml_runtime import contract as rc

Obj = dict[str, Any]

WAIT_FOR_SUPERLINK = """
import socket, sys, time
host, port, limit = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while True:
    try:
        socket.create_connection((host, port), timeout=2).close()
        break
    except OSError as err:
        if time.monotonic() > limit:
            sys.exit(f"SuperLink {host}:{port} did not accept connections: {err}")
        time.sleep(0.5)
"""
"""The submitter's init container: wait until the SuperLink's port accepts connections."""

SUPERLINK_WAIT_SECONDS = 600


def _env(job: Obj, settings: RenderSettings) -> list[Obj]:
    meta = job["metadata"]
    env: list[Obj] = [
        {"name": rc.ENV_CONFIG, "value": rc.CONFIG_PATH},
        {"name": rc.ENV_JOB_NAME, "value": meta["name"]},
        {"name": rc.ENV_JOB_NAMESPACE, "value": meta["namespace"]},
        {"name": rc.ENV_JOB_UID, "value": meta["uid"]},
        {"name": rc.ENV_POD_IP, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "HOME", "value": "/tmp"},
        {"name": "FLWR_HOME", "value": FLWR_HOME},
    ]
    env.extend({"name": k, "value": v} for k, v in settings.extra_env)
    return env


def _config_volume(job: Obj) -> tuple[Obj, Obj]:
    n = names(child_base(job))
    return (
        {"name": "config", "configMap": {"name": n["configMap"]}},
        {"name": "config", "mountPath": rc.CONFIG_DIR, "readOnly": True},
    )


def _key_volume(job: Obj, name: str, mount_path: str, items: list[tuple[str, str]],
                secret_name: str | None = None) -> tuple[Obj, Obj]:
    """Mount the listed ``(Secret key, file)`` pairs of a key Secret (the job's), nothing else."""
    secret = {
        "secretName": secret_name or names(child_base(job))["tlsSecret"],
        "items": [{"key": key, "path": path} for key, path in items],
    }
    return (
        {"name": name, "secret": secret},
        {"name": name, "mountPath": mount_path, "readOnly": True},
    )


def _tls_volume(job: Obj, fj: FederatedJob, *, serving: bool,
                secret_name: str | None = None) -> list[tuple[Obj, Obj]]:
    if not fj.spec.tls.enabled:
        return []
    files = [tls.CA_FILE, tls.CERT_FILE, tls.KEY_FILE] if serving else [tls.CA_FILE]
    return [_key_volume(job, "tls", TLS_DIR, [(f, f) for f in files], secret_name)]


def _container(
    job: Obj,
    name: str,
    args: list[str],
    settings: RenderSettings,
    image: str | None,
    mounts: list[Obj],
    resources: Obj | None,
) -> Obj:
    container: Obj = {
        "name": name,
        "image": image or settings.image,
        "command": [*ROLE_COMMAND, *args],
        "env": _env(job, settings),
        "volumeMounts": [*mounts, {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": container_security_context(),
        "terminationMessagePath": rc.TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if resources:
        container["resources"] = resources
    return container


def _pod_spec(
    job: Obj,
    containers: list[Obj],
    volumes: list[Obj],
    *,
    restart: str,
    node_selector: Mapping[str, str] | None,
    tolerations: list[Obj] | None,
) -> Obj:
    spec: Obj = {
        "restartPolicy": restart,
        "serviceAccountName": names(child_base(job))["serviceAccount"],
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": containers,
        "volumes": [*volumes, {"name": "tmp", "emptyDir": {}}],
    }
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = tolerations
    return spec


def render_superlink_pod(job: Obj, fj: FederatedJob, settings: RenderSettings) -> Obj:
    """Render the SuperLink pod: the Fleet API and the Control API on separate ports, over TLS.

    It runs the operator's pinned runtime image (``settings.image``), never
    ``spec.runtime.image``: the SuperLink and the ServerApp it starts see every round's
    aggregate (and, without SecAgg+, each silo's clipped update), so the analyst chooses
    strategy parameters, not server code. With ``spec.output.model`` the ServerApp writes the
    final global model to the operator-owned output claim mounted here.
    """
    n = names(child_base(job))
    runtime = fj.spec.runtime
    pairs = [_config_volume(job), *_tls_volume(job, fj, serving=True)]
    args = ["superlink", "--config", rc.CONFIG_PATH, "--host", "0.0.0.0",
            "--port", str(rc.SUPERLINK_PORT), "--control-port", str(rc.SUPERLINK_CONTROL_PORT)]
    if fj.spec.output is not None and fj.spec.output.model is not None:
        pairs.append((
            {"name": "output", "persistentVolumeClaim": {
                "claimName": delivery.names(job)["output"]}},
            {"name": "output", "mountPath": delivery.OUTPUT_MOUNT},
        ))
    container = _container(
        job,
        SUPERLINK,
        args,
        settings,
        None,
        [m for _, m in pairs],
        runtime.resources.to_dict() if runtime.resources else None,
    )
    container["ports"] = [
        {"name": "fleet", "containerPort": rc.SUPERLINK_PORT, "protocol": "TCP"},
        {"name": "control", "containerPort": rc.SUPERLINK_CONTROL_PORT, "protocol": "TCP"},
        {"name": "metrics", "containerPort": rc.FEDERATION_METRICS_PORT, "protocol": "TCP"},
    ]
    container["readinessProbe"] = {
        "tcpSocket": {"port": rc.SUPERLINK_PORT},
        "periodSeconds": 1,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata(job, n["superlink"], SUPERLINK),
        "spec": _pod_spec(
            job, [container], [v for v, _ in pairs], restart="Always",
            node_selector=runtime.node_selector,
            tolerations=[t.to_dict() for t in runtime.tolerations] if runtime.tolerations
            else None,
        ),
    }


def render_supernode_pod(
    job: Obj, fj: FederatedJob, client: FederatedClient, settings: RenderSettings
) -> Obj:
    """Render one silo's SuperNode pod: its own data, placement and resources, its own key.

    A silo that names a PrivateDataset runs in the dataset's namespace and mounts its own key
    Secret there (:func:`~ppml_operator.render.federated.render_key_secrets`); it runs
    ``spec.runtime.image`` (which the dataset's ``access.images`` approved) or the operator's.
    """
    n = names(child_base(job), [client.name])
    own = n[f"tlsSecret/{client.name}"] if across_owners(job) else None
    pairs = [_config_volume(job), *_tls_volume(job, fj, serving=False, secret_name=own)]
    if fj.spec.authentication.enabled:
        pairs.append(_key_volume(job, "auth", AUTH_DIR, [
            (tls.supernode_private_key(client.name), tls.AUTH_PRIVATE_FILE)], own))
    data = client_data(fj, client)
    if data.volume is not None:
        pairs.append(
            (
                {"name": "data", "persistentVolumeClaim": {
                    "claimName": data.volume.claim_name, "readOnly": True}},
                {"name": "data", "mountPath": DATA_MOUNT, "readOnly": True},
            )
        )
    container = _container(
        job,
        SUPERNODE,
        ["supernode", "--config", rc.CONFIG_PATH, "--client", client.name,
         "--data-dir", SILO_DATA_DIR],
        settings,
        fj.spec.runtime.image,
        [m for _, m in pairs],
        client.resources.to_dict() if client.resources else None,
    )
    meta = metadata(job, n[f"supernode/{client.name}"], SUPERNODE,
                    namespace=client_namespace(job, client.name))
    meta["labels"]["ppml.dev/client"] = client.name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": _pod_spec(
            job, [container], [v for v, _ in pairs], restart="Always",
            node_selector=client.node_selector,
            tolerations=[t.to_dict() for t in client.tolerations] if client.tolerations
            else None,
        ),
    }


def render_submit_job(job: Obj, fj: FederatedJob, settings: RenderSettings) -> Obj:
    """Render the submitter: one attempt of ``flwr run``, its report as termination message.

    It runs the operator's pinned runtime image and dials only the SuperLink's Control port.
    """
    clients = client_names(fj)
    n = names(child_base(job), clients)
    runtime = fj.spec.runtime
    pairs = [_config_volume(job), *_tls_volume(job, fj, serving=False)]
    if fj.spec.authentication.enabled:
        pairs.append(_key_volume(job, "public-keys", PUBLIC_KEYS_DIR, [
            (tls.supernode_public_key(c), f"{c}.pub") for c in clients]))
    container = _container(
        job,
        SUBMITTER,
        ["submit", "--config", rc.CONFIG_PATH, "--flwr-home", FLWR_HOME],
        settings,
        None,
        [m for _, m in pairs],
        runtime.resources.to_dict() if runtime.resources else None,
    )
    container["terminationMessagePolicy"] = "File"  # the report, never a log tail
    wait = {
        "name": "wait-superlink",
        "image": settings.image,
        "command": ["python", "-c", WAIT_FOR_SUPERLINK, superlink_host(job),
                    str(rc.SUPERLINK_CONTROL_PORT),
                    str(SUPERLINK_WAIT_SECONDS)],
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec = _pod_spec(
        job, [container], [v for v, _ in pairs], restart="Never",
        node_selector=runtime.node_selector,
        tolerations=[t.to_dict() for t in runtime.tolerations] if runtime.tolerations else None,
    )
    pod_spec["initContainers"] = [wait]
    job_spec: Obj = {
        "backoffLimit": 0,  # a second attempt would run the federation (and spend) again
        "completions": 1,
        "parallelism": 1,
        "suspend": bool(fj.spec.suspend),
        "template": {
            "metadata": {"labels": metadata(job, n["submit"], SUBMITTER)["labels"]},
            "spec": pod_spec,
        },
    }
    if fj.spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = fj.spec.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(job, n["submit"], SUBMITTER),
        "spec": job_spec,
    }

