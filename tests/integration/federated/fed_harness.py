"""Local Flower federations for the integration tests: a SuperLink and SuperNodes on loopback.

Every process is started through the runtime's roles (``python -m ppml_runtime ROLE``)
exactly as the pods start them, each in its own session so that tearing down also stops the
``flower-superexec`` and app processes Flower spawns. Certificates are generated per test module
with ``cryptography``: a CA, the SuperLink's serving certificate (SAN 127.0.0.1 and localhost),
and an unrelated CA that a rogue SuperNode trusts instead.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ppml_runtime.contract import split_sizes
from ppml_runtime.federated import flwr_cli
from ppml_runtime.federated.contract import (
    ENV_AUDIT_DIR,
    FederationConfig,
    FederationProgress,
    parse_federation_progress,
)

DIGITS_RECORDS = 1797


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    rogue_ca: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("ppml-test-ca")
    _, rogue_cert = _ca("rogue-ca")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "superlink")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pki = Pki(directory / "ca.pem", directory / "superlink.pem", directory / "superlink.key",
              directory / "rogue-ca.pem")
    pki.ca.write_bytes(ca_cert.public_bytes(pem))
    pki.cert.write_bytes(cert.public_bytes(pem))
    _write_key(pki.key, key)
    pki.rogue_ca.write_bytes(rogue_cert.public_bytes(pem))
    return pki


def digits_config(
    n_clients: int, rounds: int, superlink: str, pki: Pki | None, **overrides: Any
) -> FederationConfig:
    """A federation over IID shards of scikit-learn's digits, one shard per silo."""
    shards = [len(s) for s in np.array_split(np.arange(DIGITS_RECORDS), n_clients)]
    clients = [
        {
            "name": f"silo-{i}",
            "data": {
                "source": "Builtin",
                "builtin": {"name": "Digits"},
                "numRecords": split_sizes(size, "0.2")[0],
            },
            "partition": {"index": i, "count": n_clients},
        }
        for i, size in enumerate(shards)
    ]
    raw: dict[str, Any] = {
        "job": {"name": "digits", "namespace": "test", "uid": "uid-1"},
        "rounds": rounds,
        "clients": clients,
        "model": {"architecture": "LogisticRegression"},
        "training": {"epochs": 1, "batchSize": 32, "learningRate": "0.1"},
        "superlinkAddress": superlink,
        # The Control API has its own port (ppml_runtime.federated.superlink): a free one.
        "controlAddress": f"{superlink.rsplit(':', 1)[0]}:{free_port()}",
        # So are the ServerApp's live gauges (fixed in a pod, shared on a host).
        "metricsPort": free_port(),
    }
    if pki is not None:
        raw["tls"] = {"caFile": str(pki.ca), "certFile": str(pki.cert), "keyFile": str(pki.key)}
    raw.update(overrides)
    return FederationConfig.model_validate(raw)


def write_config(config: FederationConfig, path: Path) -> Path:
    path.write_text(config.model_dump_json(by_alias=True, exclude_none=True))
    return path


@dataclass
class Federation:
    """A running SuperLink and its SuperNodes."""

    workdir: Path
    config: FederationConfig
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def superlink_log(self) -> Path:
        return self.workdir / "superlink.log"

    def spawn(self, args: list[str], log: Path, env: dict[str, str] | None = None,
              module: bool = True) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "ppml_runtime", *args] if module else args
        with log.open("wb") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                ["nice", "-n", "10", *cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**flwr_cli.flower_path_env(), **(env or {})},
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def activated(self) -> int:
        text = self.superlink_log.read_text(errors="replace") if self.superlink_log.exists() else ""
        return text.count("Activated node_id")

    def wait_activated(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.activated() >= count:
                return
            for proc in self.procs:
                if proc.poll() is not None and proc.returncode not in (0, None):
                    raise RuntimeError(f"a federation process exited {proc.returncode}")
            time.sleep(0.5)
        raise TimeoutError(f"only {self.activated()} of {count} SuperNodes activated")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with _suppress():
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with _suppress():
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            # Flower's own children live in the same session; make sure none is left behind.
            with _suppress():
                os.killpg(proc.pid, signal.SIGKILL)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError | PermissionError)  # type: ignore[arg-type]


def make_auth_keys(directory: Path, names: list[str]) -> dict[str, tuple[Path, Path]]:
    """ECDSA P-384 key pairs in OpenSSH encoding, as Flower's SuperNode authentication uses."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = {}
    for name in names:
        key = ec.generate_private_key(ec.SECP384R1())
        private, public = directory / f"{name}.key", directory / f"{name}.pub"
        private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.OpenSSH,
                                              serialization.NoEncryption()))
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
            + b"\n"
        )
        keys[name] = (private, public)
    return keys


def with_private_key(config: FederationConfig, key: Path) -> FederationConfig:
    """The config one SuperNode pod sees: the federation's, with its own private key."""
    raw = config.model_dump(by_alias=True, exclude_none=True)
    raw.setdefault("auth", {})["privateKeyFile"] = str(key)
    return FederationConfig.model_validate(raw)


def start_federation(workdir: Path, config: FederationConfig, audit_dir: Path | None = None,
                     supernodes: int | None = None,
                     private_keys: dict[str, Path] | None = None) -> Federation:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = write_config(config, workdir / "config.json")
    fed = Federation(workdir, config)
    port = int(config.superlink_address.rsplit(":", 1)[1])
    env = {"HOME": str(workdir / "home")}
    if audit_dir is not None:
        env[ENV_AUDIT_DIR] = str(audit_dir)
    control = int((config.control_address or "").rsplit(":", 1)[1])
    # Free ports for the Control API and the all-API one (fixed in a pod, shared on a host).
    fed.spawn(["superlink", "--config", str(cfg_path), "--host", "127.0.0.1", "--port", str(port),
               "--control-port", str(control), "--internal-port", str(free_port())],
              fed.superlink_log, env)
    clients = config.clients[: supernodes if supernodes is not None else len(config.clients)]
    for entry in clients:
        node_cfg = cfg_path
        if private_keys:
            node_cfg = write_config(with_private_key(config, private_keys[entry.name]),
                                    workdir / f"config-{entry.name}.json")
        fed.spawn(
            ["supernode", "--config", str(node_cfg), "--client", entry.name,
             "--port", str(free_port()), "--data-dir", str(workdir / "data")],
            workdir / f"{entry.name}.log",
            {"HOME": str(workdir / f"home-{entry.name}")},
        )
    return fed


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class GaugeWatcher:
    """Poll the ServerApp's live gauges in a thread while a federation runs (as the operator)."""

    def __init__(self, port: int, every: float = 0.2) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.every = every
        self.seen: list[FederationProgress] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GaugeWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                with urllib.request.urlopen(self.url, timeout=1) as answer:
                    self.seen.append(parse_federation_progress(answer.read().decode()))
            except OSError:
                continue  # not serving yet, or any more
