"""The Flower ServerApp of a FederatedJob.

It reads the federation from the SuperLink pod's mounted config (the run config carries only
the job's UID; by hand or in simulation, the whole federation), builds the initial model
(seeded, so every run of the same config starts from the same weights), the strategy chain of
:mod:`ppml_runtime.federated.strategy`, and runs Flower's ``DefaultWorkflow`` on a
``LegacyContext``, with ``SecAggPlusWorkflow`` as the fit workflow when secure aggregation is on
(SecAgg+ works only with the legacy strategies and ``NumPyClient``). While the rounds run it
serves their count and durations on ``metricsPort`` for the operator
(:mod:`ppml_runtime.federated.metrics`).
"""

from __future__ import annotations

import os

from flwr.common import Context, Parameters, ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from ppml_runtime.federated.contract import ENV_SERVER_CONFIG, FederationConfig, run_federation
from ppml_runtime.federated.warm import prompt_server_polls

# The grid this process pulls replies through sleeps a fixed 3 s between pulls; every fit,
# evaluate and SecAgg+ stage would wait for it (see ppml_runtime.federated.warm).
prompt_server_polls()


def initial_parameters(config: FederationConfig) -> Parameters | None:
    """Build the seeded initial model when the data's shape is declared, else ``None``."""
    from ppml_runtime.federated.local_training import build_model, get_parameters, model_shape

    features, classes = model_shape(config.clients[0].data)
    if features is None or classes is None:
        return None  # volume data: Flower asks one client for its initial parameters
    model = build_model(
        config.model,
        features,
        classes,
        None,
        validate=False,
        seed=config.training.seed,
    )
    return ndarrays_to_parameters(get_parameters(model))


def build_workflow(config: FederationConfig) -> DefaultWorkflow:
    """Return the workflow: plain fit rounds, or SecAgg+ fit rounds with the job's parameters."""
    sa = config.secure_aggregation
    if sa is None:
        return DefaultWorkflow()
    return DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=sa.num_shares,
            reconstruction_threshold=sa.reconstruction_threshold,
            max_weight=float(sa.max_weight),
            clipping_range=float(sa.clipping_range),
            quantization_range=sa.quantization_range,
            modulus_range=sa.modulus_range,
            timeout=float(config.round_timeout_seconds),
        )
    )


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation's rounds, serving their progress while they run."""
    from ppml_runtime.federated.metrics import FederationGauges
    from ppml_runtime.federated.strategy import build_strategy

    config = run_federation(context.run_config, os.environ.get(ENV_SERVER_CONFIG))
    gauges = FederationGauges(config.metrics_port_value, config.rounds)
    try:
        strategy = build_strategy(config, initial_parameters(config),
                                  on_round=gauges.round_completed)
        legacy = LegacyContext(
            context=context,
            config=ServerConfig(
                num_rounds=config.rounds, round_timeout=float(config.round_timeout_seconds)
            ),
            strategy=strategy,
        )
        build_workflow(config)(grid, legacy)
        if config.release is not None:
            write_final_model(config, legacy)
    finally:
        gauges.close()


def write_final_model(config: FederationConfig, context: Context) -> str:
    """Write the final global model where the operator delivers it from; log its SHA-256.

    The model is the federation's one release towards the analyst (differentially private by
    post-processing under Central or Local DP). The submitter reads the logged digest from
    ``flwr log`` and reports it; the delivery checks the files against it.
    """
    import json
    from datetime import UTC, datetime

    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    from ppml_runtime.contract import MODEL_CARD_FORMAT
    from ppml_runtime.federated.contract import MODEL_LOG_PREFIX
    from ppml_runtime.federated.local_training import build_model, model_shape, set_parameters
    from ppml_runtime.federated.model_card import render_federated_readme
    from ppml_runtime.release.artifact import ModelFileConfig, write_model

    assert config.release is not None
    features, classes = model_shape(config.clients[0].data)
    if features is None or classes is None:
        raise RuntimeError("the global model's shape is not declared: it cannot be written")
    model = build_model(config.model, features, classes, None, validate=False,
                        seed=config.training.seed)
    arrays = context.state.array_records[MAIN_PARAMS_RECORD]
    set_parameters(model, [a.numpy() for a in arrays.values()])
    file_config = ModelFileConfig(
        architecture=config.model.architecture,
        hidden_units=list(config.model.hidden_units),
        import_path=config.model.import_path,
        num_features=features,
        num_classes=classes,
    )
    card: dict[str, object] = {"format": MODEL_CARD_FORMAT, "job": config.job.name,
                               "jobNamespace": config.job.namespace}
    card.update(config.release.card)
    card.update(architecture=config.model.architecture, rounds=config.rounds,
                privacyMode=config.privacy.mode, clients=len(config.clients),
                trainRecords=sum(c.data.num_records for c in config.clients),
                created=datetime.now(UTC).isoformat())
    sha256 = write_model(config.release.model_dir, model, file_config, card,
                         readme=render_federated_readme)
    print(MODEL_LOG_PREFIX + json.dumps({"sha256": sha256}), flush=True)
    return sha256
