"""The operator <-> runtime contract of a Flower federation: ``FederationConfig`` and its report.

One ``FederationConfig`` is mounted into every pod of a ``FederatedJob`` (SuperLink, each
SuperNode, the submitter); each role reads the parts it needs. The ServerApp receives the same
config through the run config (``ppml-federation``, JSON) so the run is self-describing.

Like :mod:`ppml_runtime.contract`, this module imports only pydantic, the standard library and
that module: the operator renders and parses these models without the training stack.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from ppml_runtime.contract import (
    CONTRACT_VERSION,
    FEDERATION_METRICS_PORT,
    SUPERLINK_PORT,
    TERMINATION_MESSAGE_LIMIT,
    ContractModel,
    DataConfig,
    DecimalStr,
    JobRef,
    ModelConfig,
    PrivacyParams,
    TrainingParams,
    gauge_samples,
    read_pinned_config,
)

StrategyName = Literal["FedAvg", "FedProx", "FedAdam"]
PrivacyMode = Literal["None", "Central", "Local"]
ClippingSide = Literal["ClientSide", "ServerSide"]
Weighting = Literal["Examples", "Uniform"]
RunStatus = Literal["Completed", "Failed", "Stopped"]

#: Run-config key carrying the whole ``FederationConfig`` (JSON) to the ServerApp and the
#: ClientApps where there is no mounted config (Flower's simulation, processes started by hand).
RUN_CONFIG_KEY = "ppml-federation"
#: Run-config key the pods' submitter sends instead: only the job's UID. Flower hands the run
#: config to every SuperNode, so it must not carry the silos' declarations; the ServerApp and
#: each ClientApp read their own mounted, pinned config and check it is this job's.
RUN_JOB_UID_KEY = "ppml-job-uid"
#: Node-config keys the SuperNode role passes to its ClientApp processes.
NODE_CONFIG_CLIENT = "ppml-client"
NODE_CONFIG_DATA = "ppml-data"
#: The SuperNode's mounted config (its silo's view, :meth:`FederationConfig.silo_view`).
NODE_CONFIG_CONFIG = "ppml-config"
#: Environment variable naming the SuperLink pod's mounted config, for its ServerApp.
ENV_SERVER_CONFIG = "PPML_FEDERATION_SERVER_CONFIG"
#: Where the SuperNode role (and a simulated ClientApp) keeps its silo's pre-built data.
ENV_DATA_DIR = "PPML_FEDERATION_DATA_DIR"
#: Environment variable naming a directory where the ServerApp writes what its strategy received
#: in each round (an audit trail; the SecAgg+ test reads it).
ENV_AUDIT_DIR = "PPML_FEDERATION_AUDIT_DIR"
#: Prefix of the ServerApp log line carrying one round's metrics (JSON after the prefix).
ROUND_LOG_PREFIX = "PPML_ROUND "
#: The ServerApp's log line announcing the final global model it wrote (``{"sha256": ...}``).
MODEL_LOG_PREFIX = "PPML_MODEL "
#: Flower's default SecAgg+ modulus, and the largest this runtime accepts (32-bit masks).
MODULUS_RANGE = 4294967296


class StrategyConfig(ContractModel):
    """How the server aggregates: ``name`` and its hyper-parameters.

    ``weighting`` is ``Examples`` (FedAvg's weighted mean) or ``Uniform`` (every client counts
    the same); central DP needs ``Uniform``, the default under DP.
    """

    name: StrategyName = "FedAvg"
    proximal_mu: DecimalStr = "0.01"
    server_learning_rate: DecimalStr = "0.1"
    tau: DecimalStr = "0.001"
    weighting: Weighting | None = None


class CentralPrivacy(ContractModel):
    """Client-level central DP: each round clips client updates and adds Gaussian noise.

    ``clientsPerRound`` is the number of clients sampled per round that the accountant assumed;
    a round with fewer replies fails (fail closed) instead of spending a different privacy cost.
    """

    noise_multiplier: DecimalStr
    clipping_norm: DecimalStr
    clients_per_round: int = Field(ge=1)
    delta: DecimalStr = "1e-5"
    clipping: ClippingSide | None = None
    charged_epsilon: DecimalStr | None = None


class FederatedPrivacy(ContractModel):
    """Privacy mode: ``None``, ``Central`` (client-level) or ``Local`` (DP-SGD at each silo)."""

    mode: PrivacyMode = "None"
    central: CentralPrivacy | None = None


class SecureAggregation(ContractModel):
    """SecAgg+ parameters (Flower's ``SecAggPlusWorkflow``); its presence enables SecAgg+."""

    num_shares: int = Field(ge=3)
    reconstruction_threshold: int = Field(ge=2)
    clipping_range: DecimalStr = "8.0"
    quantization_range: int = Field(default=4194304, ge=2)
    modulus_range: int = Field(default=MODULUS_RANGE, ge=2, le=MODULUS_RANGE)
    max_weight: DecimalStr = "1000"


class TlsFiles(ContractModel):
    """PEM files: the CA every role trusts, and the SuperLink's own certificate and key."""

    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None


class AuthConfig(ContractModel):
    """SuperNode authentication: each SuperNode's key pair, registered before the run."""

    private_key_file: str | None = None
    public_key_files: list[str] = Field(default_factory=list)


class ClientPartition(ContractModel):
    """Which shard of the declared data this silo holds: ``index`` of ``count``, seeded.

    ``scheme`` is ``Iid`` or ``Dirichlet`` (label skew with concentration ``alpha``); see
    :mod:`ppml_runtime.federated.partition`. Real silos mount their own data and leave this
    unset; the examples carve one built-in set into disjoint shards.
    """

    scheme: Literal["Iid", "Dirichlet"] = "Iid"
    index: int = Field(ge=0)
    count: int = Field(ge=1)
    seed: int = 0
    alpha: DecimalStr | None = None

    @model_validator(mode="after")
    def _coherent(self) -> ClientPartition:
        if self.index >= self.count:
            raise ValueError(f"partition.index {self.index} is not below count {self.count}")
        if (self.scheme == "Dirichlet") != (self.alpha is not None):
            raise ValueError("partition.alpha is required with scheme Dirichlet, and only there")
        return self


class ClientEntry(ContractModel):
    """One data silo: its name, its data and, under local DP, what its own budget paid for."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    data: DataConfig
    partition: ClientPartition | None = None
    privacy: PrivacyParams | None = None


class FederatedRelease(ContractModel):
    """Where the ServerApp writes the final global model, and the model card's static facts.

    ``card`` holds what the operator knows (datasets, budgets, ε charged, δ, accountant, noise,
    clipping, runtime image); the runtime adds the rest (``MODEL_CARD_RUNTIME_KEYS``).
    """

    model_dir: str
    card: dict[str, str] = Field(default_factory=dict)


class FederationConfig(ContractModel):
    """The config of one Flower federation (every role of a ``FederatedJob`` reads it)."""

    contract_version: int = CONTRACT_VERSION
    job: JobRef
    rounds: int = Field(ge=1, le=10_000)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    min_clients: int | None = Field(default=None, ge=1)
    clients: list[ClientEntry] = Field(min_length=1)
    privacy: FederatedPrivacy = Field(default_factory=FederatedPrivacy)
    secure_aggregation: SecureAggregation | None = None
    model: ModelConfig
    training: TrainingParams
    total_clients: int | None = Field(default=None, ge=1)
    """Set in a silo's view only: how many clients the federation has (``clients`` then lists
    only that silo's own entries; see :meth:`silo_view`)."""
    superlink_address: str = f"127.0.0.1:{SUPERLINK_PORT}"
    control_address: str | None = None
    """Where the submitter reaches the SuperLink's Control API (unset: superlinkAddress)."""
    tls: TlsFiles | None = None
    auth: AuthConfig | None = None
    evaluate: bool = True
    round_timeout_seconds: int = Field(default=600, ge=1)
    release: FederatedRelease | None = None
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Where the ServerApp serves the live gauges (:class:`FederationProgress`); 0: nowhere.

    Unset (what the operator renders, so a config stays readable by a SuperNode image that
    predates the field): :data:`~ppml_runtime.contract.FEDERATION_METRICS_PORT`.
    """

    @model_validator(mode="after")
    def _coherent(self) -> FederationConfig:
        if self.contract_version != CONTRACT_VERSION:
            raise ValueError(
                f"contractVersion {self.contract_version} is not {CONTRACT_VERSION}, the one this "
                "runtime speaks"
            )
        names = [c.name for c in self.clients]
        if len(set(names)) != len(names):
            raise ValueError(f"clients names must be unique, found {names}")
        if self.total_clients is not None and self.total_clients < len(self.clients):
            raise ValueError(
                f"totalClients {self.total_clients} is fewer than the {len(self.clients)} listed"
            )
        if self.min_clients is not None and self.min_clients > self.client_count:
            raise ValueError(
                f"minClients {self.min_clients} is more than the {self.client_count} clients"
            )
        self._check_privacy()
        self._check_secagg()
        return self

    @property
    def metrics_port_value(self) -> int:
        """The port the ServerApp serves its gauges on (``metricsPort`` or the contract's)."""
        return FEDERATION_METRICS_PORT if self.metrics_port is None else self.metrics_port

    def _check_privacy(self) -> None:
        mode, central = self.privacy.mode, self.privacy.central
        if mode == "Central":
            if central is None:
                raise ValueError("privacy.mode is Central but privacy.central is unset")
            if central.clients_per_round > self.client_count:
                raise ValueError(
                    f"privacy.central.clientsPerRound {central.clients_per_round} is more than "
                    f"the {self.client_count} clients"
                )
            if self.strategy.weighting == "Examples":
                raise ValueError(
                    "strategy.weighting Examples cannot be used with central DP: the accountant "
                    "assumes every client's clipped update counts the same (use Uniform)"
                )
            if Decimal(central.noise_multiplier) <= 0 or Decimal(central.clipping_norm) <= 0:
                raise ValueError(
                    "privacy.central.noiseMultiplier and clippingNorm must both be positive"
                )
            if self.secure_aggregation is not None and central.clipping == "ServerSide":
                raise ValueError(
                    "privacy.central.clipping ServerSide cannot be used with secureAggregation: "
                    "the server never sees an individual update to clip (use ClientSide)"
                )
        elif central is not None:
            raise ValueError(f"privacy.central is set but privacy.mode is {mode}")
        if mode == "Local":
            missing = [c.name for c in self.clients if c.privacy is None]
            if missing:
                raise ValueError(
                    f"privacy.mode is Local but clients {', '.join(missing)} have no privacy"
                )
        elif any(c.privacy is not None for c in self.clients):
            raise ValueError(f"clients[].privacy is set but privacy.mode is {mode}")

    def _check_secagg(self) -> None:
        sa = self.secure_aggregation
        if sa is None:
            return
        sampled = self.clients_per_round
        if sampled < 2:
            raise ValueError("secureAggregation needs at least 2 clients per round")
        if sa.reconstruction_threshold >= sa.num_shares:
            raise ValueError(
                f"secureAggregation.reconstructionThreshold {sa.reconstruction_threshold} must "
                f"be less than numShares {sa.num_shares}"
            )
        if 2 * sa.reconstruction_threshold <= sa.num_shares:
            raise ValueError(
                f"secureAggregation.reconstructionThreshold {sa.reconstruction_threshold} must "
                f"exceed half of numShares {sa.num_shares}"
            )
        if sa.num_shares > sampled:
            raise ValueError(
                f"secureAggregation.numShares {sa.num_shares} is more than the {sampled} clients "
                "sampled per round"
            )
        if sa.modulus_range & (sa.modulus_range - 1):
            raise ValueError(
                f"secureAggregation.modulusRange {sa.modulus_range} is not a power of 2"
            )
        if sampled * sa.quantization_range > sa.modulus_range:
            raise ValueError(
                f"{sampled} clients per round times secureAggregation.quantizationRange "
                f"{sa.quantization_range} exceeds the modulus range {sa.modulus_range}: the sum "
                "of the quantized updates would wrap around"
            )
        if Decimal(sa.clipping_range) <= 0 or Decimal(sa.max_weight) <= 0:
            raise ValueError("secureAggregation.clippingRange and maxWeight must be positive")

    @property
    def clients_per_round(self) -> int:
        """Clients sampled each round: ``privacy.central.clientsPerRound``, else all of them."""
        if self.privacy.central is not None:
            return self.privacy.central.clients_per_round
        return self.client_count

    @property
    def client_count(self) -> int:
        """How many clients the federation has (a silo's view lists only its own)."""
        return self.total_clients if self.total_clients is not None else len(self.clients)

    def silo_view(self, names: Collection[str]) -> FederationConfig:
        """Return what the SuperNodes of the silos ``names`` need, and nothing of the others'.

        Their own client entries (data, shard, what their budget paid for), the federation's
        shared parameters and its size; not the other silos' names, datasets, record counts or
        paid steps, not the submitter's public keys and not the model card (which lists every
        dataset and budget). The operator mounts this in each data owner's namespace that holds
        only SuperNodes (``operator/src/ppml_operator/render/federated.py``).
        """
        own = [c for c in self.clients if c.name in names]
        auth = None if self.auth is None else self.auth.model_copy(
            update={"public_key_files": []})
        return FederationConfig.model_validate(self.model_copy(update={
            "clients": own, "total_clients": self.client_count, "auth": auth,
            "release": None}).model_dump(by_alias=True))

    @property
    def weighting(self) -> Weighting:
        """The effective weighting: explicit, else ``Uniform`` under DP, ``Examples`` without.

        Central DP requires ``Uniform`` (its sensitivity assumes equal weights); under local DP
        weighting is post-processing, so ``Examples`` is allowed when asked for.
        """
        if self.strategy.weighting is not None:
            return self.strategy.weighting
        return "Examples" if self.privacy.mode == "None" else "Uniform"

    @property
    def clipping_side(self) -> ClippingSide | None:
        """Where central DP clips: client-side under SecAgg+ (the server sees no update)."""
        central = self.privacy.central
        if central is None:
            return None
        if central.clipping is not None:
            return central.clipping
        return "ClientSide" if self.secure_aggregation is not None else "ServerSide"

    def client(self, name: str) -> ClientEntry:
        """Return the entry of the silo called ``name``."""
        for entry in self.clients:
            if entry.name == name:
                return entry
        known = ", ".join(c.name for c in self.clients)
        raise KeyError(f"no client {name!r} in the federation (clients: {known})")


def load_federation_config(path: str | Path) -> FederationConfig:
    """Read and validate a federation config (JSON, or YAML).

    Parameters
    ----------
    path
        The config file.

    Returns
    -------
    FederationConfig
        The validated config.

    """
    text = read_pinned_config(path)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        raw = yaml.safe_load(text)
    return FederationConfig.model_validate(raw)


def run_federation(run_config: Mapping[str, object], mounted: str | None) -> FederationConfig:
    """Return the federation a ServerApp or ClientApp runs.

    In the pods each side reads its own mounted, pinned config: the ServerApp the whole one
    (``ENV_SERVER_CONFIG``), a ClientApp its silo's view (``NODE_CONFIG_CONFIG``); the run
    config, which Flower hands to every SuperNode, carries only the job's UID, checked here.
    Without a mounted config (Flower's simulation, processes started by hand) the run config
    carries the whole federation.

    Raises
    ------
    ValueError
        When the run is another job's than the mounted config's.

    """
    if not mounted:
        return FederationConfig.model_validate_json(str(run_config[RUN_CONFIG_KEY]))
    config = load_federation_config(mounted)
    uid = run_config.get(RUN_JOB_UID_KEY)
    if uid is None and RUN_CONFIG_KEY in run_config:
        uid = FederationConfig.model_validate_json(str(run_config[RUN_CONFIG_KEY])).job.uid
    if str(uid) != config.job.uid:
        raise ValueError(f"the run was submitted for job {uid}, but this config is job "
                         f"{config.job.uid}'s: refusing to run it")
    return config


def dump_federation_config(config: FederationConfig) -> str:
    """Serialise a federation config as compact JSON (camelCase, unset fields left out)."""
    return config.model_dump_json(by_alias=True, exclude_none=True)


# ---------------------------------------------------------------------------------------------
# The report (the submitter's termination message)
# ---------------------------------------------------------------------------------------------


#: Longest error message a report keeps before it drops rounds to fit.
ERROR_LIMIT = 1024


class RoundMetrics(ContractModel):
    """What one round produced, as the ServerApp logged it."""

    round: int = Field(ge=1)
    clients: int = 0
    failures: int = 0
    #: Optimizer steps all clients took this round (DP-SGD steps under local DP).
    steps: int | None = None
    train_loss: float | None = None
    eval_loss: float | None = None
    accuracy: float | None = None
    seconds: float | None = None


class FederationReport(ContractModel):
    """What the submitter reports when the run ends, in at most 4 KiB."""

    contract_version: int = CONTRACT_VERSION
    status: RunStatus
    run_id: int | None = None
    rounds_completed: int = 0
    rounds: list[RoundMetrics] = Field(default_factory=list)
    final_accuracy: float | None = None
    model_sha256: str | None = None
    clients: int = 0
    wall_seconds: float | None = None
    error: str | None = None


def dump_federation_report(
    report: FederationReport, limit: int = TERMINATION_MESSAGE_LIMIT
) -> str:
    """Serialise a report as compact JSON within ``limit`` bytes.

    The free-text error is first cut to ``ERROR_LIMIT`` characters; when the report still does
    not fit, the oldest rounds are dropped (the last rounds and the totals matter most), then
    the error is shortened further.
    """

    def encode(r: FederationReport) -> str:
        return json.dumps(
            r.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":")
        )

    def size(r: FederationReport) -> int:
        return len(encode(r).encode("utf-8"))

    if report.error and len(report.error) > ERROR_LIMIT:
        report = report.model_copy(update={"error": report.error[: ERROR_LIMIT - 1] + "…"})
    while size(report) > limit and report.rounds:
        report = report.model_copy(update={"rounds": report.rounds[1:]})
    while size(report) > limit and report.error:
        over = size(report) - limit
        cut = report.error[: max(0, len(report.error) - over - 2)]
        report = report.model_copy(update={"error": (cut + "…") if cut else None})
    if size(report) > limit:
        raise ValueError(f"report does not fit in {limit} bytes")
    return encode(report)


def parse_federation_report(text: str) -> FederationReport:
    """Parse a termination message written by :func:`dump_federation_report`."""
    return FederationReport.model_validate_json(text)


# ---------------------------------------------------------------------------------------------
# Live progress (the ServerApp's gauges on ``metricsPort``)
# ---------------------------------------------------------------------------------------------

METRIC_ROUNDS_COMPLETED = "ppml_federation_rounds_completed"
METRIC_TOTAL_ROUNDS = "ppml_federation_total_rounds"
#: One sample per completed round, labelled ``round``: the newest ``ROUNDS_SERVED`` rounds.
METRIC_ROUND_SECONDS = "ppml_federation_round_seconds"
#: How many rounds' durations the ServerApp serves (the newest; as many as the job's status
#: keeps), so the answer stays far below the operator's read bound whatever ``rounds`` is.
ROUNDS_SERVED = 100

RoundNumber = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class FederationProgress(ContractModel):
    """A running federation's live gauges, as the ServerApp serves them.

    Only counts and durations: never a round's loss or accuracy, which are computed on the
    silos' private records without noise (they travel in the owner-side report only).
    """

    rounds_completed: int = Field(default=0, ge=0)
    total_rounds: int | None = Field(default=None, ge=1)
    round_seconds: dict[RoundNumber, Seconds] = Field(default_factory=dict)
    """Seconds each completed round took, by round number (the newest ``ROUNDS_SERVED``)."""

    #: Metric name of each plain gauge.
    METRIC_NAMES: ClassVar[dict[str, str]] = {
        "rounds_completed": METRIC_ROUNDS_COMPLETED,
        "total_rounds": METRIC_TOTAL_ROUNDS,
    }


def parse_federation_progress(metrics_text: str) -> FederationProgress:
    """Read a :class:`FederationProgress` from Prometheus text exposition (stdlib only).

    Parameters
    ----------
    metrics_text
        The body of ``GET /metrics`` on the ServerApp's metrics port.

    Returns
    -------
    FederationProgress
        The gauges found; missing ones keep their defaults.

    Raises
    ------
    pydantic.ValidationError
        When a value is out of range (a negative count, a round number below 1, an infinite
        duration).

    """
    by_name = {v: k for k, v in FederationProgress.METRIC_NAMES.items()}
    fields: dict[str, object] = {}
    seconds: dict[str, float] = {}
    for name, labels, value in gauge_samples(metrics_text):
        if name in by_name and not labels:
            fields[by_name[name]] = int(value) if math.isfinite(value) else value
        elif name == METRIC_ROUND_SECONDS and set(labels) == {"round"}:
            seconds[labels["round"]] = value
    fields["round_seconds"] = seconds
    return FederationProgress.model_validate(fields)
