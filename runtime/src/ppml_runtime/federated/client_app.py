"""The Flower ClientApp of a FederatedJob: one silo's training and evaluation.

Each SuperNode passes its silo's name and the path of its pre-built data file in its node
config; the run config carries the federation. The module imports only flwr and numpy at load
time: every message starts a fresh ``flwr-clientapp`` process, so torch is imported inside
``fit``/``evaluate`` and Opacus only under local DP.

Mods: SecAgg+ masking and client-side clipping act only when the server's message asks for them
(a SecAgg+ stage config, a clipping norm from ``DifferentialPrivacyClientSideFixedClipping``),
and only on train messages; nothing touches evaluate messages (Flower's ``LocalDpMod`` on an
evaluate message froze the SuperNode, so local DP lives inside ``fit``, not in a mod).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, cast

import numpy as np
from flwr.client import NumPyClient
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Context, Message, MessageType

from ppml_runtime.federated.contract import (
    ENV_DATA_DIR,
    NODE_CONFIG_CLIENT,
    NODE_CONFIG_CONFIG,
    NODE_CONFIG_DATA,
    FederationConfig,
    run_federation,
)

#: Fit-config key the ServerApp sets to the round number.
FIT_CONFIG_ROUND = "server-round"
_KEY_CLIPPING_NORM = "clipping_norm"  # flwr.common.differential_privacy_constants
_SECAGG_CONFIGS = "secaggplus_configs"  # flwr.common.secure_aggregation.secaggplus_constants


class SiloClient(NumPyClient):
    """A silo's NumPyClient: trains on its own data only."""

    def __init__(self, config: FederationConfig, name: str, data_path: str) -> None:
        self.config = config
        self.entry = config.client(name)
        self.data_path = data_path

    @cached_property
    def data(self) -> Any:
        """The silo's records, read on first use (a refused round never reads them)."""
        from ppml_runtime.federated.silo_data import load_silo_data

        return load_silo_data(self.data_path)

    def _model(self) -> Any:
        from ppml_runtime.federated.local_training import build_model, model_shape

        features, classes = model_shape(self.entry.data, self.data.num_classes)
        return build_model(
            self.config.model,
            features or self.data.num_features,
            classes or self.data.num_classes,
            self.data.image_shape,
            validate=self.config.privacy.mode == "Local",
            seed=self.config.training.seed,
        )

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        """Return freshly initialised parameters (asked only for volume data)."""
        from ppml_runtime.federated.local_training import get_parameters

        return get_parameters(self._model())

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """Train locally from the global parameters; return the new ones."""
        server_round = int(config.get(FIT_CONFIG_ROUND, 1))
        local_steps = None
        if self.config.privacy.mode == "Local" and self.entry.privacy is not None:
            # Before anything touches the data: count this round against what was paid.
            from ppml_runtime.federated.silo_budget import claim_round, spent_path

            local_steps = claim_round(
                spent_path(self.data_path),
                silo=self.entry.name,
                paid_rounds=self.config.rounds,
                paid_steps=self.entry.privacy.steps,
                server_round=server_round,
            )
        from ppml_runtime.federated import local_training as lt

        model = self._model()
        lt.set_parameters(model, parameters)
        seed = self.config.training.seed * 1000 + server_round
        if local_steps is not None and self.entry.privacy is not None:
            result = lt.train_local_dp(
                model,
                self.data,
                self.config.training,
                self.entry.privacy,
                rounds=self.config.rounds,
                server_round=server_round,
                steps=local_steps,
            )
        else:
            mu = (
                float(self.config.strategy.proximal_mu)
                if self.config.strategy.name == "FedProx"
                else 0.0
            )
            result = lt.train_plain(
                model, self.data, self.config.training, proximal_mu=mu, seed=seed
            )
        weight = result.num_examples if self.config.weighting == "Examples" else 1
        return (
            result.parameters,
            weight,
            {
                "train_loss": result.train_loss,
                "steps": result.steps,
                "records": result.num_examples,
            },
        )

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]:
        """Evaluate the global parameters on the silo's test split."""
        from ppml_runtime.federated import local_training as lt

        quick = lt.evaluate_numpy(self.config.model, parameters, self.data)
        if quick is not None:
            loss, accuracy, records = quick
        else:
            model = self._model()
            lt.set_parameters(model, parameters)
            loss, accuracy, records = lt.evaluate(model, self.data)
        return loss, records, {"accuracy": accuracy}


def client_fn(context: Context) -> Any:
    """Build this silo's client from its mounted config (or the run config's) and node config.

    Under Flower's simulation engine (no SuperNode role) the node config holds only
    ``partition-id``: the silo is ``clients[partition-id]`` and its data file is built on first
    use in ``$PPML_FEDERATION_DATA_DIR`` (or a temporary directory).
    """
    mounted = context.node_config.get(NODE_CONFIG_CONFIG)
    config = run_federation(context.run_config, str(mounted) if mounted else None)
    if NODE_CONFIG_CLIENT in context.node_config:
        name = str(context.node_config[NODE_CONFIG_CLIENT])
        data_path = str(context.node_config[NODE_CONFIG_DATA])
    else:
        name = config.clients[int(context.node_config["partition-id"])].name
        data_path = _simulation_data(config, name)
    return SiloClient(config, name, data_path).to_client()


def _simulation_data(config: FederationConfig, name: str) -> str:
    import os
    import tempfile
    from pathlib import Path

    from ppml_runtime.federated.silo_data import build_silo_data, save_silo_data

    base = Path(os.environ.get(ENV_DATA_DIR) or tempfile.gettempdir()) / config.job.uid
    path = base / f"{name}.npz"
    if not path.exists():
        save_silo_data(build_silo_data(config.client(name)), path)
    return str(path)


def _is_train(msg: Message) -> bool:
    return msg.metadata.message_type == MessageType.TRAIN


def secagg_when_asked_mod(msg: Message, ctxt: Context, call_next: Any) -> Message:
    """Run Flower's ``secaggplus_mod`` on train messages that carry a SecAgg+ stage."""
    if _is_train(msg) and _SECAGG_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, ctxt, call_next)
    return cast(Message, call_next(msg, ctxt))


def clipping_when_asked_mod(msg: Message, ctxt: Context, call_next: Any) -> Message:
    """Run Flower's ``fixedclipping_mod`` on train messages whose config names a clipping norm."""
    if _is_train(msg):
        for record in msg.content.config_records.values():
            if _KEY_CLIPPING_NORM in record:
                return fixedclipping_mod(msg, ctxt, call_next)
    return cast(Message, call_next(msg, ctxt))


# Order matters: clipping acts on the client's update first, then SecAgg+ masks the clipped one.
app = ClientApp(client_fn=client_fn, mods=[secagg_when_asked_mod, clipping_when_asked_mod])
