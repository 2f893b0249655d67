"""The SuperLink's path split: one Flower app served on three ports, each with its own APIs.

``superlink.serve`` runs Flower's app (here a stand-in with a lifespan, in place of
``create_app``) on the internal port (every API, the lifespan's owner) and behind
:class:`~ppml_runtime.federated.superlink.OnlyPaths` on the Fleet and Control ports. Real HTTP
requests check that each public port answers only its own API (404 otherwise), that requests
there carry the internal server's lifespan state (Flower's handlers read it), and that the
internal port serves everything.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Any

import pytest

from ppml_runtime.federated import superlink
from ppml_runtime.federated.superlink import CONTROL_PREFIXES, FLEET_PREFIXES, allowed


@pytest.mark.parametrize(("path", "prefixes", "expected"), [
    ("/v1/fleet", FLEET_PREFIXES, True),
    ("/v1/fleet/pull-messages", FLEET_PREFIXES, True),
    ("/v1/fleetx", FLEET_PREFIXES, False),
    ("/v1/control/start-run", FLEET_PREFIXES, False),
    ("/v1/runtime/pull-messages", FLEET_PREFIXES, False),
    ("/v1/control/start-run", CONTROL_PREFIXES, True),
    ("/v1/fleet/pull-messages", CONTROL_PREFIXES, False),
    ("/", CONTROL_PREFIXES, False),
    ("/v1", CONTROL_PREFIXES, False),
])
def test_allowed(path: str, prefixes: tuple[str, ...], expected: bool) -> None:
    assert allowed(path, prefixes) is expected


async def stand_in_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Flower's app stand-in: its lifespan sets state; every request echoes path and state."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["flower"] = "lifespan state"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = json.dumps({"path": scope["path"],
                       "state": (scope.get("state") or {}).get("flower")}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


# uvicorn imports its (unused here) websockets implementation when it loads a config.
@pytest.mark.filterwarnings("ignore:websockets:DeprecationWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:websockets")
def test_each_port_serves_only_its_api(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    import uvicorn
    from flwr.superlink import main as flwr_main

    # The package re-exports a function of the module's name: import the module itself.
    fs = importlib.import_module("flwr.superlink.cli.flower_superlink")

    servers: list[Any] = []

    class Recorded(uvicorn.Server):
        def __init__(self, config: uvicorn.Config) -> None:
            super().__init__(config)
            servers.append(self)

    monkeypatch.setattr(uvicorn, "Server", Recorded)
    monkeypatch.setattr(flwr_main, "create_app", lambda config, lifespan: stand_in_app)
    monkeypatch.setattr(fs, "_parse_superlink_lifespan_config",
                        lambda: SimpleNamespace(ssl_keyfile=None, ssl_certfile=None))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(logging.getLogger("flwr"), "propagate", True)
    fleet, control, internal = free_port(), free_port(), free_port()
    thread = threading.Thread(target=superlink.serve, args=(["--insecure"],), kwargs={
        "host": "127.0.0.1", "fleet_port": fleet, "control_port": control,
        "internal_port": internal}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not (len(servers) == 3 and all(s.started for s in servers)):
            assert time.monotonic() < deadline, "the SuperLink's servers did not start"
            time.sleep(0.05)
        fleet_call = get(fleet, "/v1/fleet/pull-messages")
        assert fleet_call[0] == 200
        assert json.loads(fleet_call[1]) == {"path": "/v1/fleet/pull-messages",
                                             "state": "lifespan state"}
        assert get(fleet, "/v1/control/start-run")[0] == 404
        assert get(fleet, "/v1/runtime/pull-messages")[0] == 404
        assert get(control, "/v1/control/start-run")[0] == 200
        assert get(control, "/v1/fleet/pull-messages")[0] == 404
        assert get(control, "/v1/runtime/pull-messages")[0] == 404
        for path in ("/v1/fleet/x", "/v1/control/x", "/v1/runtime/x"):
            assert get(internal, path)[0] == 200
        assert logging.getLogger("flwr").propagate is False  # Flower's lines printed once
    finally:
        for server in servers:
            server.should_exit = True
        thread.join(timeout=15)
    assert not thread.is_alive()
