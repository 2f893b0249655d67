"""Command lines for Flower's processes and CLI, and parsers for what the CLI prints.

Pure functions (no process is started here), so the operator's expectations and the tests can
check the exact flags: SuperLink and SuperNode command lines with TLS and authentication, the
``$FLWR_HOME/config.toml`` SuperLink connection, and the JSON of ``flwr run``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ppml_runtime.contract import SUPERLINK_PORT, SUPERNODE_RUNTIME_PORT
from ppml_runtime.federated.contract import (
    MODEL_LOG_PREFIX,
    NODE_CONFIG_CLIENT,
    NODE_CONFIG_CONFIG,
    NODE_CONFIG_DATA,
    ROUND_LOG_PREFIX,
    RUN_CONFIG_KEY,
    RUN_JOB_UID_KEY,
    FederationConfig,
    RoundMetrics,
    dump_federation_config,
)

#: Name of the SuperLink connection the submitter writes into ``$FLWR_HOME/config.toml``.
CONNECTION_NAME = "ppml"
#: The Flower App shipped inside this package.
APP_DIR = Path(__file__).parent / "app"


def flower_binary(name: str) -> str:
    """Return the path of a Flower executable: beside this interpreter first, else on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    return shutil.which(name) or name


def flower_path_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Return ``env`` (default: this process's) with this interpreter's scripts first on PATH.

    SuperLink and SuperNode start ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp``
    by name, so the directory holding them must be on PATH even when the venv is not activated.
    """
    base = dict(os.environ if env is None else env)
    bin_dir = str(Path(sys.executable).parent)
    parts = base.get("PATH", "").split(os.pathsep)
    if bin_dir not in parts:
        base["PATH"] = os.pathsep.join([bin_dir, *[p for p in parts if p]])
    return base


def superlink_command(
    config: FederationConfig,
    *,
    host: str = "0.0.0.0",
    port: int = SUPERLINK_PORT,
    database: str | None = None,
) -> list[str]:
    """Return the ``flower-superlink`` command line for this federation."""
    return [flower_binary("flower-superlink"), "--host", host, "--port", str(port),
            *superlink_args(config, database=database)]


def superlink_args(config: FederationConfig, *, database: str | None = None) -> list[str]:
    """Return ``flower-superlink``'s arguments but the address: TLS, auth, database."""
    cmd = ["--disable-runtime-dependency-installation"]
    if database:
        cmd += ["--database", database]
    tls = config.tls
    if tls is None:
        cmd.append("--insecure")
    else:
        if not tls.cert_file or not tls.key_file:
            raise ValueError("tls.certFile and tls.keyFile are required on the SuperLink")
        cmd += [
            "--ssl-ca-certfile",
            tls.ca_file,
            "--ssl-certfile",
            tls.cert_file,
            "--ssl-keyfile",
            tls.key_file,
        ]
    if config.auth is not None:
        cmd.append("--enable-supernode-auth")
    return cmd


def supernode_command(
    config: FederationConfig,
    client: str,
    data_path: str,
    *,
    host: str = "127.0.0.1",
    port: int = SUPERNODE_RUNTIME_PORT,
    max_wait_seconds: int | None = None,
    config_path: str | None = None,
) -> list[str]:
    """Return the SuperNode command line for the silo called ``client``.

    It runs Flower's ``flower-supernode`` with these arguments through
    :mod:`ppml_runtime.federated.warm`: one warm in-process ClientApp instead of a
    ``flwr-clientapp`` process per message, and no fixed 3 s polls. ``config_path`` (the
    SuperNode's mounted config) is where its ClientApp reads the federation from.
    """
    config.client(client)  # refuse a silo the federation does not know
    node_config = f'{NODE_CONFIG_CLIENT}="{client}" {NODE_CONFIG_DATA}="{data_path}"'
    if config_path is not None:
        node_config += f' {NODE_CONFIG_CONFIG}="{config_path}"'
    cmd = [
        sys.executable,
        "-m",
        "ppml_runtime.federated.warm",
        "supernode",
        "--superlink",
        config.superlink_address,
        "--host",
        host,
        "--port",
        str(port),
        "--node-config",
        node_config,
    ]
    if config.tls is None:
        cmd.append("--insecure")
    else:
        cmd += ["--root-certificates", config.tls.ca_file]
    if config.auth is not None and config.auth.private_key_file:
        cmd += ["--auth-supernode-private-key", config.auth.private_key_file]
    if max_wait_seconds is not None:
        cmd += ["--max-wait-time", str(max_wait_seconds)]
    return cmd


def _toml_string(value: str) -> str:
    # A JSON string literal is a valid TOML basic string (same escapes, ASCII only).
    return json.dumps(value, ensure_ascii=True)


def flower_config_toml(config: FederationConfig) -> str:
    """Return ``$FLWR_HOME/config.toml`` naming the federation's SuperLink."""
    lines = [
        "[superlink]",
        f"default = {_toml_string(CONNECTION_NAME)}",
        "",
        f"[superlink.{CONNECTION_NAME}]",
        f"address = {_toml_string(config.control_address or config.superlink_address)}",
    ]
    if config.tls is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {_toml_string(config.tls.ca_file)}")
    return "\n".join(lines) + "\n"


def run_config_toml(config: FederationConfig) -> str:
    """Return the ``--run-config`` override file carrying the whole federation config.

    For Flower's processes started by hand (``benchmarks/federated.py``): Flower gives the run
    config to every SuperNode, so the pods' submitter sends :func:`run_reference_toml` instead.
    """
    return f"{RUN_CONFIG_KEY} = {_toml_string(dump_federation_config(config))}\n"


def run_reference_toml(config: FederationConfig) -> str:
    """Return the ``--run-config`` override file the pods' submitter sends: the job's UID only.

    The ServerApp and every ClientApp read their own mounted config (the server's whole, each
    silo's :meth:`~ppml_runtime.federated.contract.FederationConfig.silo_view`) and refuse a run
    of another job.
    """
    return f"{RUN_JOB_UID_KEY} = {_toml_string(config.job.uid)}\n"


def run_command(app_dir: str, run_config_file: str) -> list[str]:
    """Return the ``flwr run`` command that submits the app.

    No ``--stream``: it exits 0 even when the ServerApp failed; the status comes from the
    Control API (``roles.RunStatusClient``).
    """
    return [
        flower_binary("flwr"),
        "run",
        app_dir,
        CONNECTION_NAME,
        "--run-config",
        run_config_file,
        "--format",
        "json",
    ]


def log_command(run_id: int) -> list[str]:
    """Return the ``flwr log`` command that prints a run's ServerApp log once."""
    return [flower_binary("flwr"), "log", str(run_id), CONNECTION_NAME, "--show"]


def _json_object(text: str) -> dict[str, object]:
    start = text.find("{")
    end = text.rfind("}")
    if start < 0 or end < start:
        raise ValueError(f"no JSON object in the Flower CLI output: {text[-500:]!r}")
    value = json.loads(text[start : end + 1])
    if not isinstance(value, dict):
        raise ValueError("the Flower CLI printed JSON that is not an object")
    return value


def parse_run_id(text: str) -> int:
    """Return the run id from ``flwr run --format json`` output."""
    data = _json_object(text)
    if not data.get("success", True):
        raise RuntimeError(f"flwr run failed: {data.get('error-message') or data}")
    run_id = data.get("run-id")
    if run_id is None:
        raise ValueError(f"flwr run printed no run-id: {data}")
    return int(str(run_id))


@dataclass(frozen=True)
class RunState:
    """A run's status as the Control API reports it (``running``, ``finished`` + ``completed``)."""

    status: str
    sub_status: str

    @property
    def finished(self) -> bool:
        """Whether the run has ended."""
        return self.status == "finished"

    @property
    def succeeded(self) -> bool:
        """Whether the run ended successfully."""
        return self.finished and self.sub_status == "completed"


def parse_round_metrics(log_text: str) -> list[RoundMetrics]:
    """Return the per-round metrics the ServerApp logged (one JSON line per round)."""
    rounds: dict[int, RoundMetrics] = {}
    for line in log_text.splitlines():
        at = line.find(ROUND_LOG_PREFIX)
        if at < 0:
            continue
        try:
            metrics = RoundMetrics.model_validate_json(line[at + len(ROUND_LOG_PREFIX) :].strip())
        except ValueError:
            continue
        rounds[metrics.round] = metrics
    return [rounds[k] for k in sorted(rounds)]


def parse_model_sha256(log_text: str) -> str | None:
    """Return the SHA-256 of the final model the ServerApp logged writing, if it did."""
    found = None
    for line in log_text.splitlines():
        at = line.find(MODEL_LOG_PREFIX)
        if at < 0:
            continue
        try:
            value = json.loads(line[at + len(MODEL_LOG_PREFIX):].strip()).get("sha256")
        except (ValueError, AttributeError):
            continue
        if isinstance(value, str) and len(value) == 64:
            found = value
    return found
