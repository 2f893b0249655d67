"""Render the children of a PrivateTrainingJob: the trainer's config, pods, network and identity.

Children (deterministic names from the job's name):

- ``{job}-trainer`` ServiceAccount (no token mounted: the trainer never calls the API server);
- ``{job}-config`` ConfigMap holding the runtime contract's :class:`TrainerConfig` as JSON,
  with exactly the noise multiplier, sampling rate and steps that were paid for;
- ``{job}-trainer`` NetworkPolicy: the trainer pods talk only to each other (the rendezvous) and
  to DNS; the metrics port is open to the operator's pods only (the batch loss it serves is
  computed on private records without noise);
- ``{job}-workers`` headless Service when ``runtime.workers > 1`` (the rendezvous addresses);
- ``{job}-output`` PersistentVolumeClaim when ``spec.output.model`` is set: operator-owned
  storage the trainer writes the model to (``render/delivery.py`` takes it from there);
- ``{job}-trainer`` batch/v1 Job, Indexed, one pod per worker (rank = completion index), meeting
  the ``restricted`` Pod Security Standard; a pod exiting with the contract's "invalid config"
  or "data mismatch" code fails the whole job at once (retrying cannot help).

For a job on another namespace's PrivateDataset every child is rendered into that namespace
and named ``{namespace}-{job}-...`` (``render/common.py``, ``child_base``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ppml_operator.api.errors import InvalidSpecError
from ppml_operator.api.v1alpha1 import DataSpec, PrivateTrainingJob
from ppml_operator.render import delivery
from ppml_operator.render.common import (
    DATASET,
    RenderSettings,
    child_base,
    config_map,
    container_security_context,
    dns_egress,
    exec_namespace,
    metadata,
    pin_config,
    pod_security_context,
    selector,
    service_account,
    truncate_name,
)
from ppml_runtime import contract as rc

Obj = dict[str, Any]

COMPONENT = "trainer"
"""The ``app.kubernetes.io/component`` of the trainer's children."""


DATA_MOUNT = "/data"
"""Where a Volume data source's claim is mounted (read-only)."""

CHECKPOINT_MOUNT = "/checkpoints"
"""Where the checkpoint claim is mounted."""


@dataclass(frozen=True)
class Paid:
    """The privacy parameters the budget paid for: the runtime must use exactly these."""

    noise_multiplier: str
    sample_rate: str
    steps: int
    delta: str
    epsilon: str
    accountant: str = "RDP"


def names(job_name: str) -> dict[str, str]:
    """Return the name of each child of the job."""
    return {
        "serviceAccount": truncate_name(job_name, "trainer", 253),
        "configMap": truncate_name(job_name, "config", 253),
        "networkPolicy": truncate_name(job_name, "trainer", 253),
        "service": truncate_name(job_name, "workers"),
        "job": truncate_name(job_name, "trainer", 52),  # leaves room for pod name suffixes
    }


def resolved_data(ptj: PrivateTrainingJob) -> DataSpec:
    """Return the data of a resolved job (``reconcile/dataset.py`` fills a dataset's in)."""
    if ptj.spec.data is None:
        raise InvalidSpecError("spec.datasetRef",
                               "the job's PrivateDataset was not resolved before rendering")
    return ptj.spec.data


def data_config(data: DataSpec) -> Obj:
    """Render the runtime contract's data section; ``numRecords`` is the training split's size."""
    train_records, _ = data.split_sizes()
    cfg: Obj = {
        "source": str(data.source),
        "numRecords": train_records,
        "testFraction": data.test_fraction,
        "splitSeed": data.split_seed,
    }
    if data.builtin is not None:
        cfg["builtin"] = {"name": str(data.builtin.name)}
    if data.synthetic is not None:
        cfg["synthetic"] = {
            "numFeatures": data.synthetic.num_features,
            "numClasses": data.synthetic.num_classes,
            "seed": data.synthetic.seed,
        }
    if data.volume is not None:
        volume: Obj = {
            "path": f"{DATA_MOUNT}/{data.volume.path}",
            "format": str(data.volume.format),
        }
        if data.volume.label_column:
            volume["labelColumn"] = data.volume.label_column
        cfg["volume"] = volume
    return cfg


def release_config(job: Obj, ptj: PrivateTrainingJob, paid: Paid,
                   settings: RenderSettings) -> Obj:
    """Render the runtime contract's release section.

    Where the model goes, how the test metrics are released (the Gaussian mechanism paid for
    with the training) and the model card's facts.
    """
    output = ptj.spec.output
    if output is None:
        return {}
    out: Obj = {}
    if output.model is not None:
        out["modelDir"] = delivery.MODEL_DIR
    if output.test_metrics is not None:
        out["metricsNoiseMultiplier"] = output.test_metrics.noise_multiplier
        out["lossBound"] = output.test_metrics.loss_bound
    meta = job["metadata"]
    budget = ptj.spec.budget_ref.name if ptj.spec.budget_ref else ""
    # The runtime writes the job, the epsilons and the training figures itself
    # (ppml_runtime.contract.MODEL_CARD_RUNTIME_KEYS); the operator adds what only it knows.
    card = {
        "budget": f"{exec_namespace(job)}/{budget}",
        "runtimeImage": ptj.spec.runtime.image or settings.image,
    }
    if meta.get(DATASET):  # reconcile/dataset.py records it on the resolved job
        card["dataset"] = str(meta[DATASET])
    out["card"] = card
    return out


def trainer_config(job: Obj, ptj: PrivateTrainingJob, paid: Paid,
                   settings: RenderSettings | None = None) -> rc.TrainerConfig:
    """Build the runtime contract config: the data, model, training and what was paid for."""
    spec = ptj.spec
    meta = job["metadata"]
    data_cfg = data_config(resolved_data(ptj))
    model: Obj = {"architecture": str(spec.model.architecture)}
    if spec.model.hidden_units is not None:
        model["hiddenUnits"] = list(spec.model.hidden_units)
    if spec.model.import_path is not None:
        model["importPath"] = spec.model.import_path
    training: Obj = {
        "epochs": spec.training.epochs,
        "batchSize": spec.training.batch_size,
        "learningRate": spec.training.learning_rate,
        "optimizer": str(spec.training.optimizer),
    }
    if spec.training.momentum is not None:
        training["momentum"] = spec.training.momentum
    if spec.training.seed is not None:
        training["seed"] = spec.training.seed
    mode = {"Auto": "auto", "Ghost": "ghost", "Hooks": "hooks"}[str(spec.privacy.clipping_mode)]
    accountant = {"RDP": "rdp", "PLD": "prv"}[paid.accountant]
    raw: Obj = {
        "job": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
        "data": data_cfg,
        "model": model,
        "training": training,
        "privacy": {
            "noiseMultiplier": paid.noise_multiplier,
            "sampleRate": paid.sample_rate,
            "maxGradNorm": spec.privacy.max_grad_norm,
            "steps": paid.steps,
            "delta": paid.delta,
            "accountant": accountant,
            "chargedEpsilon": paid.epsilon,
            "gradSampleMode": mode,
        },
        "distributed": {"workers": spec.runtime.workers},
    }
    release = release_config(job, ptj, paid, settings or RenderSettings())
    if release:
        raw["release"] = release
    if spec.checkpoint is not None:
        raw["checkpoint"] = {"dir": CHECKPOINT_MOUNT}
    return rc.TrainerConfig.model_validate(raw)


def render_config_map(job: Obj, config: rc.TrainerConfig) -> Obj:
    """Render the immutable ConfigMap that the trainer reads its contract config from."""
    return config_map(job, names(child_base(job))["configMap"], COMPONENT,
                      rc.dump_config(config))


def operator_pods(settings: RenderSettings) -> Obj:
    """Return the peer that may scrape a trainer's metrics: the operator's pods, in its namespace.

    Only in the operator's own namespace: a pod labelled like the operator in an analyst's
    namespace must not read the trainer's unnoised batch loss. An operator outside the
    cluster's pod network (on a node, as on devcluster) reaches the port as the node, which
    NetworkPolicy implementations always admit.
    """
    return {
        "namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": settings.operator_namespace}},
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "ppml-operator",
                "app.kubernetes.io/component": "operator",
            }
        },
    }


def render_network_policy(job: Obj, settings: RenderSettings | None = None) -> Obj:
    """Render the NetworkPolicy: pods of the job talk to each other and DNS, the operator scrapes.

    The live metrics (batch loss on private records, no noise) are telemetry for the operator,
    not a DP release, so no other pod may read them.
    """
    pods = {"matchLabels": selector(job, COMPONENT)}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(job, names(child_base(job))["networkPolicy"], COMPONENT),
        "spec": {
            "podSelector": pods,
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [{"podSelector": pods}]},
                {
                    "from": [operator_pods(settings or RenderSettings())],
                    "ports": [{"protocol": "TCP", "port": rc.METRICS_PORT}],
                },
            ],
            "egress": [
                {"to": [{"podSelector": pods}]},
                dns_egress(),
            ],
        },
    }


def render_service(job: Obj) -> Obj:
    """Render the headless Service giving each worker pod a stable DNS name."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(job, names(child_base(job))["service"], COMPONENT),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector(job, COMPONENT),
            "ports": [
                {"name": "rendezvous", "port": rc.RENDEZVOUS_PORT, "protocol": "TCP"},
                {"name": "metrics", "port": rc.METRICS_PORT, "protocol": "TCP"},
            ],
        },
    }


def _env(job: Obj, ptj: PrivateTrainingJob, settings: RenderSettings) -> list[Obj]:
    meta = job["metadata"]
    n = names(child_base(job))
    workers = ptj.spec.runtime.workers
    env: list[Obj] = [
        {"name": rc.ENV_CONFIG, "value": rc.CONFIG_PATH},
        {"name": rc.ENV_JOB_NAME, "value": meta["name"]},
        {"name": rc.ENV_JOB_NAMESPACE, "value": meta["namespace"]},
        {"name": rc.ENV_JOB_UID, "value": meta["uid"]},
        {"name": rc.ENV_POD_IP, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {
            "name": rc.ENV_RANK,
            "valueFrom": {
                "fieldRef": {
                    "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                }
            },
        },
        {"name": rc.ENV_WORLD_SIZE, "value": str(workers)},
        {"name": rc.ENV_MASTER_PORT, "value": str(rc.RENDEZVOUS_PORT)},
        {
            "name": rc.ENV_MASTER_ADDR,
            "value": f"{n['job']}-0.{n['service']}" if workers > 1 else "127.0.0.1",
        },
    ]
    env.extend({"name": k, "value": v} for k, v in settings.extra_env)
    return env


def render_job(job: Obj, ptj: PrivateTrainingJob, settings: RenderSettings) -> Obj:
    """Render the batch/v1 Job running one trainer pod per worker.

    Parameters
    ----------
    job
        The PrivateTrainingJob object (its metadata names and owns the children).
    ptj
        The parsed job.
    settings
        Operator-wide rendering settings (image, command).

    Returns
    -------
    dict
        The Job manifest.

    """
    spec = ptj.spec
    n = names(child_base(job))
    workers = spec.runtime.workers
    mounts: list[Obj] = [{"name": "config", "mountPath": rc.CONFIG_DIR, "readOnly": True}]
    volumes: list[Obj] = [
        {"name": "config", "configMap": {"name": n["configMap"]}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts.append({"name": "tmp", "mountPath": "/tmp"})
    volume = resolved_data(ptj).volume
    if volume is not None:
        volumes.append(
            {
                "name": "data",
                "persistentVolumeClaim": {
                    "claimName": volume.claim_name,
                    "readOnly": True,
                },
            }
        )
        mounts.append({"name": "data", "mountPath": DATA_MOUNT, "readOnly": True})
    if spec.output is not None and spec.output.model is not None:
        volumes.append({"name": "output", "persistentVolumeClaim": {
            "claimName": delivery.names(job)["output"]}})
        mounts.append({"name": "output", "mountPath": delivery.OUTPUT_MOUNT})
    if spec.checkpoint is not None:
        volumes.append(
            {
                "name": "checkpoints",
                "persistentVolumeClaim": {"claimName": spec.checkpoint.claim_name},
            }
        )
        mounts.append({"name": "checkpoints", "mountPath": CHECKPOINT_MOUNT})
    container: Obj = {
        "name": COMPONENT,
        "image": spec.runtime.image or settings.image,
        "command": list(settings.command),
        "env": _env(job, ptj, settings),
        "ports": [
            {"name": "metrics", "containerPort": rc.METRICS_PORT, "protocol": "TCP"},
            {"name": "rendezvous", "containerPort": rc.RENDEZVOUS_PORT, "protocol": "TCP"},
        ],
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        "terminationMessagePath": rc.TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "File",
    }
    if spec.runtime.resources is not None:
        container["resources"] = spec.runtime.resources.to_dict()
    pod_spec: Obj = {
        "restartPolicy": "Never",
        "serviceAccountName": n["serviceAccount"],
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if workers > 1:
        pod_spec["subdomain"] = n["service"]
    if spec.runtime.node_selector:
        pod_spec["nodeSelector"] = dict(spec.runtime.node_selector)
    if spec.runtime.tolerations:
        pod_spec["tolerations"] = [t.to_dict() for t in spec.runtime.tolerations]
    job_spec: Obj = {
        "completionMode": "Indexed",
        "completions": workers,
        "parallelism": workers,
        "backoffLimit": spec.backoff_limit,
        "suspend": bool(spec.suspend),
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": COMPONENT,
                        "operator": "In",
                        "values": [rc.EXIT_INVALID_CONFIG, rc.EXIT_DATA_MISMATCH],
                    },
                },
            ]
        },
        "template": {
            "metadata": {"labels": metadata(job, n["job"], COMPONENT)["labels"]},
            "spec": pod_spec,
        },
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(job, n["job"], COMPONENT),
        "spec": job_spec,
    }


def render_children(
    job: Obj, ptj: PrivateTrainingJob, paid: Paid, settings: RenderSettings
) -> list[Obj]:
    """Render every child of an admitted job, in creation order (the Job last).

    Parameters
    ----------
    job
        The PrivateTrainingJob object.
    ptj
        The parsed job.
    paid
        What the budget paid for.
    settings
        Operator-wide rendering settings.

    Returns
    -------
    list of dict
        ServiceAccount, ConfigMap, NetworkPolicy, the headless Service when there are several
        workers, then the Job: the pods start only once everything they need exists.

    """
    n = names(child_base(job))
    config = render_config_map(job, trainer_config(job, ptj, paid, settings))
    children = [
        service_account(job, n["serviceAccount"], COMPONENT),
        config,
        render_network_policy(job, settings),
    ]
    if ptj.spec.runtime.workers > 1:
        children.append(render_service(job))
    if ptj.spec.output is not None and ptj.spec.output.model is not None:
        children.append(delivery.render_output_claim(job, COMPONENT))
    children.append(render_job(job, ptj, settings))
    return pin_config(children, config["data"][rc.CONFIG_FILE])


def config_json(job: Obj, ptj: PrivateTrainingJob, paid: Paid,
                settings: RenderSettings | None = None) -> Obj:
    """Return the trainer config as the JSON object stored in the ConfigMap (for tests)."""
    decoded: Obj = json.loads(rc.dump_config(trainer_config(job, ptj, paid, settings)))
    return decoded
