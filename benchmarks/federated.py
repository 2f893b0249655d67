"""Federation benchmark: per-round time of the FederatedJob app, side by side in one run.

Four ways to run the same Flower app (the ServerApp and ClientApp of ``ppml_runtime.federated``)
on IID shards of scikit-learn's digits, all on loopback:

- ``simulation``: Flower's simulation engine in one process (Ray actors, no per-message
  processes): the lower bound of what the deployment engine could reach.
- ``by-hand``: ``flower-superlink``/``flower-supernode``/``flwr run`` started directly with
  Flower's defaults, as a user would by hand (data files pre-built the same way; a fresh
  ``flwr-clientapp`` process per message, fixed 3 s polls: the ServerApp is told to keep them).
- ``roles``: the same through ``python -m ppml_runtime superlink|supernode|submit``, exactly what
  the operator's pods run (the operator adds only pod start-up, which is Kubernetes', not ours):
  one warm ClientApp per SuperNode and no fixed polls (``ppml_runtime.federated.warm``).
- ``secagg``: ``roles`` with SecAgg+ on, at ``--secagg-clients`` silos, beside ``roles`` at the
  same number of silos (``roles-secagg-size``) when that differs from ``--clients``.

Per-round time is what the ServerApp measures from a round's first message to its aggregated
evaluation (``PPML_ROUND`` log lines). Prints the ratios ``roles / by-hand`` (goal <= 0.2),
``secagg / plain`` at the same number of silos (goal <= 2) and ``roles / simulation`` (reported)
and writes benchmarks/results/federated.json.

Run: ``.venv/bin/python benchmarks/federated.py --clients 3 --secagg-clients 10 --rounds 4``
(about ten minutes on two shared cores).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ppml_runtime.contract import split_sizes
from ppml_runtime.federated import flwr_cli
from ppml_runtime.federated.contract import RUN_CONFIG_KEY, FederationConfig
from ppml_runtime.federated.roles import RunStatusClient, submit
from ppml_runtime.federated.silo_data import build_silo_data, save_silo_data
from ppml_runtime.federated.warm import ENV_FLOWER_POLLS

RESULTS = Path(__file__).resolve().parent / "results" / "federated.json"
DIGITS = 1797
#: Ray's raylet has been seen dying under heavy load, leaving the simulation hanging.
SIMULATION_TIMEOUT = 480


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def digits_config(clients: int, rounds: int, uid: str, secagg: bool = False) -> FederationConfig:
    shards = [len(s) for s in np.array_split(np.arange(DIGITS), clients)]
    raw: dict[str, Any] = {
        "job": {"name": "bench", "namespace": "bench", "uid": uid},
        "rounds": rounds,
        "clients": [
            {
                "name": f"silo-{i}",
                "data": {
                    "source": "Builtin",
                    "builtin": {"name": "Digits"},
                    "numRecords": split_sizes(n, "0.2")[0],
                },
                "partition": {"index": i, "count": clients},
            }
            for i, n in enumerate(shards)
        ],
        "model": {"architecture": "LogisticRegression"},
        "training": {"epochs": 1, "batchSize": 32, "learningRate": "0.1"},
        "superlinkAddress": f"127.0.0.1:{free_port()}",
    }
    if secagg:
        raw["secureAggregation"] = {"numShares": 3, "reconstructionThreshold": 2}
    return FederationConfig.model_validate(raw)


class Processes:
    """Processes started for one measurement, each in its own session (killed as a group)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], log: str, env: dict[str, str] | None = None) -> None:
        with (self.workdir / log).open("wb") as out:
            self.procs.append(
                subprocess.Popen(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**flwr_cli.flower_path_env(), **(env or {})},
                    start_new_session=True,
                )
            )

    def wait_activated(self, count: int, timeout: float = 180) -> None:
        log = self.workdir / "superlink.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if log.exists() and log.read_text(errors="replace").count("Activated node_id") >= count:
                return
            time.sleep(0.5)
        raise TimeoutError(f"SuperNodes did not all activate; see {log}")

    def stop(self) -> None:
        for proc in self.procs:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue


def _round_seconds(report_rounds: list[Any]) -> list[float]:
    return [float(r.seconds) for r in report_rounds if r.seconds is not None]


def run_roles(config: FederationConfig, workdir: Path) -> dict[str, Any]:
    """Start the federation through the runtime's roles and submit the run."""
    workdir.mkdir(parents=True)
    # The roles' SuperLink serves the Control API on its own port, as in the pods
    # (ppml_runtime/federated/superlink.py); Flower's by-hand SuperLink shares the Fleet port.
    control = str(free_port())
    config = config.model_copy(update={"control_address": f"127.0.0.1:{control}"})
    cfg = workdir / "config.json"
    cfg.write_text(config.model_dump_json(by_alias=True, exclude_none=True))
    port = config.superlink_address.rsplit(":", 1)[1]
    procs = Processes(workdir)
    started = time.monotonic()
    py = [sys.executable, "-m", "ppml_runtime"]
    try:
        procs.start([*py, "superlink", "--config", str(cfg), "--host", "127.0.0.1", "--port", port,
                     "--control-port", control, "--internal-port", str(free_port())],
                    "superlink.log", {"HOME": str(workdir)})
        for entry in config.clients:
            procs.start([*py, "supernode", "--config", str(cfg), "--client", entry.name,
                         "--port", str(free_port()), "--data-dir", str(workdir / "data")],
                        f"{entry.name}.log", {"HOME": str(workdir)})
        procs.wait_activated(len(config.clients))
        ready = time.monotonic()
        report = submit(config, flwr_home=workdir / "flwr", poll_seconds=0.5)
    finally:
        procs.stop()
    if report.status != "Completed":
        raise RuntimeError(f"roles run failed: {report.error}")
    return {
        "round_seconds": _round_seconds(report.rounds),
        "startup_seconds": round(ready - started, 2),
        "run_wall_seconds": report.wall_seconds,
        "final_accuracy": report.final_accuracy,
    }


def run_by_hand(config: FederationConfig, workdir: Path) -> dict[str, Any]:
    """Start plain Flower processes (no ppml role in between) and submit with ``flwr run``."""
    workdir.mkdir(parents=True)
    port = config.superlink_address.rsplit(":", 1)[1]
    paths = {}
    for entry in config.clients:
        paths[entry.name] = save_silo_data(build_silo_data(entry), workdir / f"{entry.name}.npz")
    procs = Processes(workdir)
    started = time.monotonic()
    try:
        procs.start(
            ["flower-superlink", "--insecure", "--disable-runtime-dependency-installation",
             "--host", "127.0.0.1", "--port", port],
            "superlink.log",
            # The ServerApp (ours, the same in every way) keeps Flower's own 3 s reply polls.
            {"HOME": str(workdir), ENV_FLOWER_POLLS: "1"},
        )
        for entry in config.clients:
            procs.start(["flower-supernode", "--insecure", "--superlink", config.superlink_address,
                         "--port", str(free_port()), "--node-config",
                         f'ppml-client="{entry.name}" ppml-data="{paths[entry.name]}"'],
                        f"{entry.name}.log", {"HOME": str(workdir)})
        procs.wait_activated(len(config.clients))
        ready = time.monotonic()
        home = workdir / "flwr"
        home.mkdir()
        (home / "config.toml").write_text(flwr_cli.flower_config_toml(config))
        env = {**flwr_cli.flower_path_env(), "FLWR_HOME": str(home)}
        (workdir / "run.toml").write_text(flwr_cli.run_config_toml(config))
        out = subprocess.run(flwr_cli.run_command(str(flwr_cli.APP_DIR), str(workdir / "run.toml")),
                             env=env, capture_output=True, text=True, check=True).stdout
        run_id = flwr_cli.parse_run_id(out)
        t0 = time.monotonic()
        # Watched as the roles' run is (in process: a `flwr ls` per poll would load the CPUs
        # this baseline is timed on).
        status = RunStatusClient(home)
        try:
            while not (state := status.state(run_id)).finished:
                time.sleep(0.5)
        finally:
            status.close()
        wall = time.monotonic() - t0
        log = subprocess.run(flwr_cli.log_command(run_id), env=env, capture_output=True,
                             text=True, check=True).stdout
    finally:
        procs.stop()
    rounds = flwr_cli.parse_round_metrics(log)
    if not state.succeeded or len(rounds) < config.rounds:
        raise RuntimeError(f"by-hand run ended {state}")
    return {
        "round_seconds": _round_seconds(rounds),
        "startup_seconds": round(ready - started, 2),
        "run_wall_seconds": round(wall, 3),
        "final_accuracy": rounds[-1].accuracy,
    }


def _simulate(config_path: str) -> None:
    """Child process: run the app under Flower's simulation engine (prints PPML_ROUND lines)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from flwr.clientapp import ClientApp
        from flwr.server import ServerApp
        from flwr.simulation import run_simulation

        from ppml_runtime.federated import client_app, server_app

    text = Path(config_path).read_text()
    config = FederationConfig.model_validate_json(text)
    srv = ServerApp()

    @srv.main()
    def _main(grid: Any, context: Any) -> None:
        context.run_config[RUN_CONFIG_KEY] = text
        server_app.main(grid, context)

    def _client_fn(context: Any) -> Any:
        context.run_config[RUN_CONFIG_KEY] = text
        return client_app.client_fn(context)

    cli = ClientApp(
        client_fn=_client_fn,
        mods=[client_app.secagg_when_asked_mod, client_app.clipping_when_asked_mod],
    )
    run_simulation(
        srv, cli, num_supernodes=len(config.clients),
        backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}},
    )


def run_simulation_engine(config: FederationConfig, workdir: Path) -> dict[str, Any]:
    """Run the app in Flower's simulation engine, in a child process."""
    workdir.mkdir(parents=True)
    cfg = workdir / "config.json"
    cfg.write_text(config.model_dump_json(by_alias=True, exclude_none=True))
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, __file__, "--_simulate", str(cfg)],
        env={**flwr_cli.flower_path_env(), "PPML_FEDERATION_DATA_DIR": str(workdir / "data"),
             "RAY_DEDUP_LOGS": "0"},
        capture_output=True, text=True, timeout=SIMULATION_TIMEOUT, check=False,
    )
    (workdir / "simulation.log").write_text(out.stdout + out.stderr)
    rounds = flwr_cli.parse_round_metrics(out.stdout + out.stderr)
    if len(rounds) < config.rounds:
        raise RuntimeError(f"simulation did not complete; see {workdir / 'simulation.log'}")
    return {
        "round_seconds": _round_seconds(rounds),
        "run_wall_seconds": round(time.monotonic() - started, 3),
        "final_accuracy": rounds[-1].accuracy,
    }


def _per_round(result: dict[str, Any]) -> float:
    # Round 1 pays one-off costs (FAB install, first imports into the page cache); report the
    # median of the rest when there are more rounds, else round 1.
    seconds = result["round_seconds"]
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--secagg-clients", type=int, default=None,
                        help="clients of the SecAgg+ comparison (default --clients)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip", action="append", default=[],
                        choices=["simulation", "by-hand", "roles", "secagg"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--_simulate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._simulate:
        _simulate(args._simulate)
        return
    work = Path(tempfile.mkdtemp(prefix="ppml-fed-bench-"))
    sa_clients = args.secagg_clients or args.clients
    plans = {
        "simulation": (run_simulation_engine, digits_config(args.clients, args.rounds, "sim")),
        "by-hand": (run_by_hand, digits_config(args.clients, args.rounds, "hand")),
        "roles": (run_roles, digits_config(args.clients, args.rounds, "roles")),
        "secagg": (run_roles, digits_config(sa_clients, args.rounds, "secagg", secagg=True)),
    }
    if sa_clients != args.clients:
        plans["roles-secagg-size"] = (run_roles, digits_config(sa_clients, args.rounds, "rs"))
    results: dict[str, Any] = {}
    for name, (runner, config) in plans.items():
        if name in args.skip:
            continue
        print(f"running {name} ({len(config.clients)} clients, {config.rounds} rounds)...",
              flush=True)
        try:
            results[name] = runner(config, work / name)
        except (RuntimeError, TimeoutError, subprocess.SubprocessError) as err:
            print(f"  {name} failed: {err}", flush=True)
            results[name] = {"error": str(err)[:500]}
            continue
        results[name]["per_round_seconds"] = round(_per_round(results[name]), 3)
        print(f"  per round {results[name]['per_round_seconds']} s "
              f"(rounds {results[name]['round_seconds']})", flush=True)
    per = {k: v["per_round_seconds"] for k, v in results.items() if "per_round_seconds" in v}
    plain_for_secagg = per.get("roles-secagg-size", per.get("roles"))
    ratios = {
        "roles_over_by_hand": per["roles"] / per["by-hand"] if {"roles", "by-hand"} <= per.keys()
        else None,
        "secagg_over_plain": per["secagg"] / plain_for_secagg
        if "secagg" in per and plain_for_secagg else None,
        "roles_over_simulation": per["roles"] / per["simulation"]
        if {"roles", "simulation"} <= per.keys() else None,
    }
    summary = {
        "clients": args.clients,
        "secagg_clients": sa_clients,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "results": results,
        "ratios": {k: (round(v, 3) if v is not None else None) for k, v in ratios.items()},
        "goals": {"roles_over_by_hand": 0.2, "secagg_over_plain": 2.0},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["ratios"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
