"""The federation's roles: ``superlink``, ``supernode`` and ``submit``.

``python -m ppml_runtime <role> --config PATH`` runs each one in its pod:

- ``superlink`` execs ``flower-superlink`` with the federation's TLS and authentication flags.
- ``supernode --client NAME`` builds the silo's data once (checked against what was paid
  for), then runs ``flower-supernode`` pointing its ClientApps at that file, restarting it
  while it cannot connect (SuperLink not up yet, key not registered yet).
- ``submit`` writes the SuperLink connection into ``$FLWR_HOME/config.toml``, registers the
  SuperNodes' public keys, submits the app with ``flwr run``, polls the Control API for the
  run's real status, as ``flwr ls`` does but in process (:class:`RunStatusClient`; ``flwr run
  --stream`` exits 0 even when the ServerApp failed), collects the
  per-round metrics from ``flwr log`` and writes a :class:`FederationReport` as the
  termination message. Exit status 0 only when the run completed all its rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ppml_runtime.contract import (
    CONFIG_PATH,
    ENV_CONFIG,
    ENV_TERMINATION_MESSAGE_PATH,
    EXIT_INVALID_CONFIG,
    SUPERLINK_CONTROL_PORT,
    SUPERLINK_INTERNAL_PORT,
    SUPERLINK_PORT,
    SUPERNODE_RUNTIME_PORT,
    TERMINATION_MESSAGE_PATH,
)
from ppml_runtime.federated import flwr_cli
from ppml_runtime.federated.contract import (
    ENV_DATA_DIR,
    ENV_SERVER_CONFIG,
    FederationConfig,
    FederationReport,
    RoundMetrics,
    dump_federation_report,
    load_federation_config,
)

LOG = logging.getLogger("ppml_runtime.federated")
#: What a SuperNode prints when it cannot connect to (or be activated by) its SuperLink; it then
#: exits with status 1, like any other failure, so the printed code is what tells them apart.
FLOWER_CONNECTION_FAILED = b"Exit Code: 305"


def _config(args: argparse.Namespace) -> FederationConfig:
    return load_federation_config(args.config)


def run_superlink(args: argparse.Namespace) -> int:
    """Run Flower's SuperLink, Fleet and Control APIs on separate ports (``superlink.py``)."""
    from ppml_runtime.federated import superlink

    config = _config(args)
    os.environ["PATH"] = flwr_cli.flower_path_env()["PATH"]  # the SuperExec starts by name
    # The ServerApp (a grandchild, through the SuperExec) reads the mounted config, checked
    # against the pod's PPML_CONFIG_SHA256 it inherits too; the run config carries no more than
    # the job's UID (Flower gives it to every SuperNode).
    os.environ[ENV_SERVER_CONFIG] = str(Path(args.config).resolve())
    LOG.info("Started SuperLink for federation %s", config.job.name)
    superlink.serve(flwr_cli.superlink_args(config, database=args.database), host=args.host,
                    fleet_port=args.port, control_port=args.control_port,
                    internal_port=args.internal_port)
    return 0


def run_supernode(args: argparse.Namespace) -> int:
    """Build the silo's data file, then exec ``flower-supernode``."""
    from ppml_runtime.federated.silo_data import build_silo_data, save_silo_data
    from ppml_runtime.training.errors import TrainerError

    config = _config(args)
    try:
        entry = config.client(args.client)
    except KeyError as err:
        print(str(err), file=sys.stderr)
        return EXIT_INVALID_CONFIG
    data_dir = Path(args.data_dir or os.environ.get(ENV_DATA_DIR) or tempfile.mkdtemp())
    try:
        path = save_silo_data(build_silo_data(entry), data_dir / f"{entry.name}.npz")
    except TrainerError as err:
        print(f"SuperNode {entry.name} refused its data: {err}", file=sys.stderr)
        return err.exit_code
    cmd = flwr_cli.supernode_command(
        config, entry.name, str(path), host=args.host, port=args.port,
        config_path=str(Path(args.config).resolve()),
    )
    LOG.info("Prepared data of silo %s at %s", entry.name, path)
    return supervise_supernode(cmd, entry.name, deadline_seconds=args.connect_deadline)


def supervise_supernode(
    cmd: list[str], name: str, *, deadline_seconds: float, backoff_seconds: float = 2.0
) -> int:
    """Run ``flower-supernode``, restarting it while it cannot connect, until the deadline.

    A SuperNode exits (printing Flower's exit code 305) when the SuperLink is not up yet or
    has not yet registered its public key (the submitter registers the keys just before it
    submits the run). Restarting here takes seconds; letting the pod crash-loop would wait for the
    kubelet's growing back-off. SIGTERM and SIGINT are passed on to the running SuperNode.
    Any other exit status is returned as is.
    """
    started = time.monotonic()
    current: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        proc = current.get("proc")
        if proc is not None and proc.poll() is None:
            _signal_group(proc, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        attempt = 0
        while True:
            attempt += 1
            # Its own process group: a SuperNode that gives up leaves its SuperExec retrying
            # forever, so each attempt's whole group is stopped before the next one starts.
            proc = subprocess.Popen(  # output passed through, and watched for the 305 code
                cmd,
                env=flwr_cli.flower_path_env(),
                start_new_session=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            current["proc"] = proc
            refused = False
            assert proc.stdout is not None
            for line in proc.stdout:
                refused = refused or FLOWER_CONNECTION_FAILED in line
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()
                if refused:
                    break  # its SuperExec keeps the pipe open; the process is done
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # seen hanging in threading._shutdown on exit
                _signal_group(proc, signal.SIGKILL)
                code = proc.wait()
            _signal_group(proc, signal.SIGKILL)
            proc.stdout.close()
            if stopping or not refused or code == 0:
                return code
            if time.monotonic() - started > deadline_seconds:
                LOG.warning("SuperNode %s could not connect within %.0f s", name, deadline_seconds)
                return code
            LOG.info("SuperNode %s could not connect (attempt %d); retrying", name, attempt)
            time.sleep(min(backoff_seconds * attempt, 10.0))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def _cli(cmd: Sequence[str], env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(
        list(cmd), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:2])} exited {done.returncode}: {(done.stderr or done.stdout)[-800:]}"
        )
    return done.stdout


def _cli_until_reachable(
    cmd: Sequence[str], env: dict[str, str], *, deadline_seconds: float, ok_if: str = ""
) -> str:
    """Run a Flower CLI command, retrying while the SuperLink cannot be reached yet.

    ``ok_if`` names an error text that means the work is already done (e.g. a key registered by
    an earlier attempt of this submitter), which counts as success.
    """
    started = time.monotonic()
    while True:
        try:
            return _cli(cmd, env)
        except RuntimeError as err:
            text = str(err)
            if ok_if and ok_if in text.lower():
                return text
            unreachable = "unavailable" in text.lower() or "connect" in text.lower()
            if not unreachable or time.monotonic() - started > deadline_seconds:
                raise
            time.sleep(2.0)


@contextlib.contextmanager
def _flwr_home(path: Path) -> Iterator[None]:
    """Point Flower's CLI functions at ``path`` (they read ``$FLWR_HOME`` when called)."""
    before = os.environ.get("FLWR_HOME")
    os.environ["FLWR_HOME"] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FLWR_HOME", None)
        else:
            os.environ["FLWR_HOME"] = before


class RunStatusClient:
    """A run's status as ``flwr ls --run-id`` reports it, over one Control API client kept open.

    Each ``flwr ls`` is a new Python process importing flwr (about 0.6 s of CPU); polled every
    half second in ``benchmarks/federated.py`` that was half of one of two cores, taken from
    the SuperLink and the ServerApp the poll waits for. This asks the same ``ListRuns`` through
    the same client ``flwr ls`` builds (``flwr/cli/ls.py``: the connection written into
    ``$FLWR_HOME/config.toml``, with its TLS root certificate), once per poll.
    """

    def __init__(self, flwr_home: Path) -> None:
        from flwr.cli.flower_config import read_superlink_connection
        from flwr.cli.utils import init_http_client_from_connection

        self._home = flwr_home
        with _flwr_home(flwr_home):
            connection = read_superlink_connection(flwr_cli.CONNECTION_NAME)
            self._client = init_http_client_from_connection(connection)

    def state(self, run_id: int) -> flwr_cli.RunState:
        """Return the run's status (``pending``, ``running``, ``finished:completed``...)."""
        from flwr.proto.control_pb2 import ListRunsRequest

        try:
            with _flwr_home(self._home):
                res = self._client.ListRuns(ListRunsRequest(run_id=run_id))
        except Exception as err:  # what `flwr ls` would have exited non-zero with
            raise RuntimeError(f"ListRuns for run {run_id} failed: {err}") from err
        if run_id not in res.run_dict:
            raise RuntimeError(f"the SuperLink did not list run {run_id}")
        status = res.run_dict[run_id].status
        return flwr_cli.RunState(status=status.status, sub_status=status.sub_status)

    def close(self) -> None:
        """Close the connection."""
        self._client.close()


def submit(
    config: FederationConfig,
    *,
    flwr_home: Path,
    poll_seconds: float = 2.0,
    deadline_seconds: float | None = None,
) -> FederationReport:
    """Submit the federation's run and wait for its end.

    Parameters
    ----------
    config
        The federation.
    flwr_home
        A writable ``FLWR_HOME`` (the Flower CLI's configuration directory).
    poll_seconds
        How often to ask the Control API for the run's status.
    deadline_seconds
        Stop the run (``flwr stop``) and report failure after this long; default: rounds times
        the round timeout.

    Returns
    -------
    FederationReport
        The run's outcome.

    """
    started = time.monotonic()
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(flwr_cli.flower_config_toml(config), encoding="utf-8")
    env = {**flwr_cli.flower_path_env(), "FLWR_HOME": str(flwr_home)}
    reach = float(config.round_timeout_seconds)
    if config.auth is not None:
        for key in config.auth.public_key_files:
            register = [flwr_cli.flower_binary("flwr"), "supernode", "register", key,
                        flwr_cli.CONNECTION_NAME]
            _cli_until_reachable(register, env, deadline_seconds=reach, ok_if="already")
    work = Path(tempfile.mkdtemp(prefix="ppml-fab-", dir=flwr_home))
    app_dir = work / "app"
    shutil.copytree(flwr_cli.APP_DIR, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
    run_config = work / "run-config.toml"
    run_config.write_text(flwr_cli.run_reference_toml(config), encoding="utf-8")
    run_id = flwr_cli.parse_run_id(
        _cli_until_reachable(
            flwr_cli.run_command(str(app_dir), str(run_config)), env, deadline_seconds=reach
        )
    )
    LOG.info("Submitted run %s of federation %s", run_id, config.job.name)
    limit = deadline_seconds or config.rounds * config.round_timeout_seconds + 300
    state = flwr_cli.RunState("pending", "")
    status = RunStatusClient(flwr_home)
    try:
        while time.monotonic() - started < limit:
            state = status.state(run_id)
            if state.finished:
                break
            time.sleep(poll_seconds)
    finally:
        status.close()
    if not state.finished:
        _cli([flwr_cli.flower_binary("flwr"), "stop", str(run_id), flwr_cli.CONNECTION_NAME], env)
    rounds = _round_metrics(run_id, env, expected=config.rounds if state.succeeded else 0)
    completed = len(rounds)
    ok = state.succeeded and completed >= config.rounds
    error = None
    if not ok:
        error = (
            f"run {run_id} ended {state.status}:{state.sub_status} after {completed} of "
            f"{config.rounds} rounds"
            if state.finished
            else f"run {run_id} did not finish within {limit:.0f} s and was stopped"
        )
    if state.finished and not state.succeeded:
        _log_serverapp_error(run_id, env)
    accuracy = next((r.accuracy for r in reversed(rounds) if r.accuracy is not None), None)
    model_sha256 = None
    if ok and config.release is not None:
        model_sha256 = _model_sha256(run_id, env)
        if model_sha256 is None:
            ok, error = False, f"run {run_id} completed but logged no final model"
    return FederationReport(
        status="Completed" if ok else ("Stopped" if state.sub_status == "stopped" else "Failed"),
        run_id=run_id,
        rounds_completed=completed,
        rounds=rounds,
        final_accuracy=accuracy,
        model_sha256=model_sha256,
        clients=len(config.clients),
        wall_seconds=round(time.monotonic() - started, 3),
        error=error,
    )


def _log_serverapp_error(run_id: int, env: dict[str, str], lines: int = 40) -> None:
    """Log the ServerApp's error (``flwr log`` from its first ERROR line) when its run failed.

    Otherwise only the SuperLink's pod would know why, and it is deleted with the federation.
    """
    with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
        text = _cli(flwr_cli.log_command(run_id), env).splitlines()
        first = next((i for i, line in enumerate(text) if "ERROR" in line), None)
        if first is not None:
            LOG.error("Run %s failed in the ServerApp:\n%s", run_id,
                      "\n".join(text[first:first + lines]))


def _model_sha256(run_id: int, env: dict[str, str], wait_seconds: float = 20.0) -> str | None:
    """Read the final model's SHA-256 the ServerApp logged (logs arrive in batches: wait)."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            found = flwr_cli.parse_model_sha256(_cli(flwr_cli.log_command(run_id), env))
            if found is not None:
                return found
        if time.monotonic() - started > wait_seconds:
            return None
        time.sleep(1.0)


def _round_metrics(
    run_id: int, env: dict[str, str], *, expected: int, wait_seconds: float = 20.0
) -> list[RoundMetrics]:
    """Read the rounds the ServerApp logged, waiting briefly for logs still in flight.

    The ServerApp's logs reach the SuperLink in batches, so right after a run finishes its last
    lines may not be there yet: ask again until ``expected`` rounds are seen or time runs out.
    """
    started = time.monotonic()
    rounds: list[RoundMetrics] = []
    while True:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            rounds = flwr_cli.parse_round_metrics(_cli(flwr_cli.log_command(run_id), env))
        if len(rounds) >= expected or time.monotonic() - started > wait_seconds:
            return rounds
        time.sleep(1.0)


def run_submit(args: argparse.Namespace) -> int:
    """Submit the run, write the report as the termination message, exit 0 only on success."""
    config = _config(args)
    home = Path(args.flwr_home or os.environ.get("FLWR_HOME") or tempfile.mkdtemp())
    try:
        report = submit(config, flwr_home=home)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as err:
        report = FederationReport(status="Failed", clients=len(config.clients), error=str(err))
    text = dump_federation_report(report)
    target = os.environ.get(ENV_TERMINATION_MESSAGE_PATH, TERMINATION_MESSAGE_PATH)
    try:
        Path(target).write_text(text, encoding="utf-8")
    except OSError as err:
        LOG.warning("Could not write the report to %s: %s", target, err)
    print(text, flush=True)
    return 0 if report.status == "Completed" else 1


def add_superlink_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``superlink`` role's options."""
    _add_config(parser)
    parser.add_argument("--host", default="0.0.0.0", help="address to serve on")
    parser.add_argument("--port", type=int, default=SUPERLINK_PORT,
                        help="the Fleet API's port (the SuperNodes')")
    parser.add_argument("--control-port", type=int, default=SUPERLINK_CONTROL_PORT,
                        help="the Control API's port (the submitter's)")
    parser.add_argument("--internal-port", type=int, default=SUPERLINK_INTERNAL_PORT,
                        help="the all-API port on 127.0.0.1 (the SuperExec's)")
    parser.add_argument("--database", default=None, help="SQLite state file (default: memory)")


def add_supernode_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``supernode`` role's options."""
    _add_config(parser)
    parser.add_argument("--client", required=True, help="the silo's name in spec.clients")
    parser.add_argument("--host", default="127.0.0.1", help="address of the runtime API")
    parser.add_argument("--port", type=int, default=SUPERNODE_RUNTIME_PORT)
    parser.add_argument("--data-dir", default=None, help=f"where the silo's data file goes "
                        f"(default ${ENV_DATA_DIR}, else a temporary directory)")
    parser.add_argument("--connect-deadline", type=float, default=900.0,
                        help="seconds to keep retrying the connection to the SuperLink")


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``submit`` role's options."""
    _add_config(parser)
    parser.add_argument("--flwr-home", default=None, help="the Flower CLI's FLWR_HOME")


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=os.environ.get(ENV_CONFIG, CONFIG_PATH),
        help=f"federation config (JSON or YAML); default ${ENV_CONFIG} or {CONFIG_PATH}",
    )


ROLES = {
    "superlink": ("run a Flower SuperLink", add_superlink_arguments, run_superlink),
    "supernode": ("run a Flower SuperNode for one silo", add_supernode_arguments, run_supernode),
    "submit": ("submit the federation's run and report it", add_submit_arguments, run_submit),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one federation role (standalone entry, used when the dispatcher is absent)."""
    parser = argparse.ArgumentParser(prog="python -m ppml_runtime.federated.roles")
    sub = parser.add_subparsers(dest="role", required=True)
    for name, (help_text, add_arguments, run) in ROLES.items():
        add_arguments(sub.add_parser(name, help=help_text))
        sub.choices[name].set_defaults(func=run)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
