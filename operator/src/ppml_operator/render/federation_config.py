"""The runtime contract's ``FederationConfig`` of a FederatedJob, from its spec and what was paid.

Every role of the federation reads this config (mounted from a ConfigMap): the silos' data as
the training splits the costs were computed on, the strategy, exactly the noise multipliers,
sampling rates and steps paid for, SecAgg+ parameters, and the TLS and key files. A spec the
runtime cannot run raises :class:`~ppml_operator.api.errors.InvalidSpecError` naming the field.
"""

from __future__ import annotations

from typing import Any

from ppml_operator.api.errors import InvalidSpecError
from ppml_operator.api.v1alpha1 import FederatedJob
from ppml_operator.api.v1alpha1.federated import (
    ClippingKind,
    ClippingSide,
    FederatedClient,
    PrivacyMode,
    Weighting,
)
from ppml_operator.render import tls
from ppml_operator.render.federation import (
    AUTH_DIR,
    PUBLIC_KEYS_DIR,
    TLS_DIR,
    FederationPaid,
    client_data,
    client_names,
    control_address,
    superlink_address,
)
from ppml_operator.render.trainer import Paid, data_config
from ppml_runtime.federated import contract as fc

Obj = dict[str, Any]


def _strategy(fj: FederatedJob) -> Obj:
    spec = fj.spec
    strategy = spec.strategy
    weighting = strategy.weighting or (
        Weighting.UNIFORM if spec.privacy.mode != PrivacyMode.NONE else Weighting.NUM_EXAMPLES
    )
    out: Obj = {
        "name": str(strategy.name),
        "weighting": "Uniform" if weighting == Weighting.UNIFORM else "Examples",
        "proximalMu": strategy.proximal_mu or "0.1",
        "serverLearningRate": strategy.server_learning_rate or "0.1",
    }
    return out


def _accountant(paid: Paid) -> str:
    return {"RDP": "rdp", "PLD": "prv"}[paid.accountant]


def _privacy(fj: FederatedJob, paid: FederationPaid) -> Obj:
    privacy = fj.spec.privacy
    if privacy.mode == PrivacyMode.NONE:
        return {"mode": "None"}
    if privacy.mode == PrivacyMode.LOCAL:
        return {"mode": "Local"}
    if privacy.clipping == ClippingKind.ADAPTIVE:
        raise InvalidSpecError(
            "spec.privacy.clipping",
            "clipping Adaptive is not supported by the federation runtime yet; use Fixed",
        )
    if paid.central is None:
        raise InvalidSpecError("spec.privacy", "privacy mode Central has no paid parameters")
    central: Obj = {
        "noiseMultiplier": paid.central.noise_multiplier,
        "clippingNorm": privacy.clipping_norm,
        "clientsPerRound": fj.spec.clients_per_round or len(fj.spec.clients),
        "delta": paid.central.delta,
        "chargedEpsilon": paid.central.epsilon,
    }
    side = {ClippingSide.CLIENT: "ClientSide", ClippingSide.SERVER: "ServerSide"}.get(
        privacy.clipping_side
    )
    if side is not None:
        central["clipping"] = side
    return {"mode": "Central", "central": central}


def _client_entry(client: FederatedClient, fj: FederatedJob, paid: FederationPaid) -> Obj:
    data = client_data(fj, client)
    entry: Obj = {"name": client.name, "data": data_config(data)}
    part = data.partition
    if part is not None:
        entry["partition"] = {
            "scheme": str(part.scheme),
            "index": part.index,
            "count": part.count,
            "seed": part.seed,
        }
        if part.alpha is not None:
            entry["partition"]["alpha"] = part.alpha
    if fj.spec.privacy.mode == PrivacyMode.LOCAL:
        local = dict(paid.clients).get(client.name)
        if local is None:
            raise InvalidSpecError(
                "spec.clients", f"client {client.name} has no paid DP-SGD parameters"
            )
        entry["privacy"] = {
            "noiseMultiplier": local.noise_multiplier,
            "sampleRate": local.sample_rate,
            "maxGradNorm": fj.spec.privacy.clipping_norm,
            "steps": local.steps,
            "delta": local.delta,
            "accountant": _accountant(local),
            "chargedEpsilon": local.epsilon,
        }
    return entry


def _secure_aggregation(fj: FederatedJob) -> Obj | None:
    sa = fj.spec.secure_aggregation
    if sa is None:
        return None
    return {
        "numShares": sa.num_shares,
        "reconstructionThreshold": sa.reconstruction_threshold,
        "clippingRange": sa.clipping_range,
        "quantizationRange": sa.quantization_range,
        "modulusRange": sa.modulus_range,
    }


def _release(job: Obj, fj: FederatedJob, paid: FederationPaid) -> Obj | None:
    """Where the ServerApp writes the final global model, and the model card's facts."""
    from ppml_operator.render.common import client_datasets
    from ppml_operator.render.delivery import MODEL_DIR

    output = fj.spec.output
    if output is None or output.model is None:
        return None
    for index, client in enumerate(fj.spec.clients):
        data = client_data(fj, client, index)
        if data.volume is not None:
            raise InvalidSpecError(
                f"spec.clients[{index}]",
                "output.model needs the global model's shape before the first round, which "
                "only built-in and synthetic data declare; volume data is not supported with "
                "output.model yet")
    privacy = fj.spec.privacy
    card: dict[str, str] = {"privacyMode": str(privacy.mode),
                            "clippingNorm": str(privacy.clipping_norm)}
    owners = client_datasets(job)
    if owners:
        card["datasets"] = ", ".join(sorted({f"{o['namespace']}/{o['dataset']}"
                                             for o in owners.values()}))
    if paid.central is not None:
        card.update(chargedEpsilon=paid.central.epsilon, delta=paid.central.delta,
                    accountant=paid.central.accountant,
                    noiseMultiplier=paid.central.noise_multiplier,
                    sampleRate=paid.central.sample_rate)
    elif paid.clients:
        card.update(chargedEpsilon=", ".join(f"{name} {p.epsilon}" for name, p in paid.clients),
                    delta=paid.clients[0][1].delta, accountant=paid.clients[0][1].accountant)
    return {"modelDir": MODEL_DIR, "card": card}


def federation_config(job: Obj, fj: FederatedJob, paid: FederationPaid) -> fc.FederationConfig:
    """Build the runtime contract config of the federation.

    Parameters
    ----------
    job
        The FederatedJob object (its metadata names the job).
    fj
        The parsed job.
    paid
        What the budgets paid for.

    Returns
    -------
    FederationConfig
        The config every role of the federation reads.

    Raises
    ------
    InvalidSpecError
        When the spec asks for something the runtime cannot run (the field is named).

    """
    from pydantic import ValidationError

    spec = fj.spec
    meta = job["metadata"]
    names_ = client_names(fj)
    training: Obj = {
        "epochs": spec.training.local_epochs,
        "batchSize": spec.training.batch_size,
        "learningRate": spec.training.learning_rate,
        "optimizer": str(spec.training.optimizer),
    }
    if spec.training.momentum is not None:
        training["momentum"] = spec.training.momentum
    if spec.training.seed is not None:
        training["seed"] = spec.training.seed
    model: Obj = {"architecture": str(spec.model.architecture)}
    if spec.model.hidden_units is not None:
        model["hiddenUnits"] = list(spec.model.hidden_units)
    if spec.model.import_path is not None:
        model["importPath"] = spec.model.import_path
    raw: Obj = {
        "job": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
        "rounds": spec.rounds,
        "strategy": _strategy(fj),
        "clients": [_client_entry(c, fj, paid) for c in spec.clients],
        "privacy": _privacy(fj, paid),
        "model": model,
        "training": training,
        "superlinkAddress": superlink_address(job),
        "controlAddress": control_address(job),
    }
    release = _release(job, fj, paid)
    if release is not None:
        raw["release"] = release
    if spec.min_clients is not None:
        raw["minClients"] = spec.min_clients
    secagg = _secure_aggregation(fj)
    if secagg is not None:
        raw["secureAggregation"] = secagg
    if spec.authentication.enabled and not spec.tls.enabled:
        raise InvalidSpecError(
            "spec.authentication.enabled",
            "SuperNode authentication needs TLS: set spec.tls.enabled to true, or turn "
            "authentication off",
        )
    if spec.tls.enabled:
        raw["tls"] = {
            "caFile": f"{TLS_DIR}/{tls.CA_FILE}",
            "certFile": f"{TLS_DIR}/{tls.CERT_FILE}",
            "keyFile": f"{TLS_DIR}/{tls.KEY_FILE}",
        }
    if spec.authentication.enabled:
        raw["auth"] = {
            "privateKeyFile": f"{AUTH_DIR}/{tls.AUTH_PRIVATE_FILE}",
            "publicKeyFiles": [f"{PUBLIC_KEYS_DIR}/{n}.pub" for n in names_],
        }
    try:
        return fc.FederationConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidSpecError(
            "spec", f"the federation runtime refuses the spec: {message}"
        ) from err
