"""Run Flower's SuperLink with its Fleet API and its Control API on separate ports.

Flower 1.42's ``flower-superlink`` serves one FastAPI app, on one HTTP port, holding the Fleet
API (``/v1/fleet``: what SuperNodes call), the Control API (``/v1/control``: submit and stop
runs, register SuperNode keys, read run logs; no authentication unless OIDC is configured) and
the ServerAppIo API (``/v1/runtime``: what the SuperExec and the ServerApp inside the
SuperLink's own pod call). ``--control-api-address`` is deprecated and only moves the old gRPC
Control API, while the HTTP one stays on the shared port. So any SuperNode could drive the
Control API.

This module builds the very same app (Flower's own argument parsing, ``create_app`` and
``SuperLinkLifespan``) and serves it three times from one event loop:

- everything, on ``127.0.0.1:<internal port>`` (the address the SuperExec is told), which owns
  the app's lifespan;
- only ``/v1/fleet`` on the Fleet port (the SuperNodes');
- only ``/v1/control`` on the Control port (the submitter's).

Each public port answers 404 to every other path, so what a NetworkPolicy admits to a port is
exactly one API (``render/federated.py`` admits only the job's SuperNodes to the Fleet port and
only its submitter to the Control port).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

FLEET_PREFIXES = ("/v1/fleet",)
"""Paths the Fleet port serves."""

CONTROL_PREFIXES = ("/v1/control",)
"""Paths the Control port serves."""


def allowed(path: str, prefixes: Sequence[str]) -> bool:
    """Return whether ``path`` is one of ``prefixes`` or below one (``/v1/fleetx`` is not)."""
    return any(path == p or path.startswith(p + "/") for p in prefixes)


class OnlyPaths:
    """An ASGI app passing on only requests under some path prefixes; 404 for the rest.

    Requests carry the lifespan state of the server that owns the app's lifespan (``state``),
    as if they had arrived there.
    """

    def __init__(self, app: Asgi, prefixes: Sequence[str],
                 state: Callable[[], dict[str, Any]]) -> None:
        self.app, self.prefixes, self.state = app, tuple(prefixes), state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection scope."""
        if scope["type"] == "lifespan":  # the internal server owns the lifespan
            return
        if scope["type"] != "http" or not allowed(str(scope.get("path", "")), self.prefixes):
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": 404,
                            "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"not served on this port"})
            return
        scope = dict(scope)
        scope["state"] = {**self.state(), **(scope.get("state") or {})}
        await self.app(scope, receive, send)


def serve(flower_args: Sequence[str], *, host: str, fleet_port: int, control_port: int,
          internal_port: int) -> None:
    """Run the SuperLink until it is stopped (blocking).

    Parameters
    ----------
    flower_args
        ``flower-superlink``'s arguments, without ``--host``/``--port`` (TLS, auth, database).
    host
        Where the Fleet and Control ports listen.
    fleet_port, control_port
        The public ports.
    internal_port
        The all-API port on 127.0.0.1 (the SuperExec's runtime address).

    """
    import importlib
    import logging

    import uvicorn
    from flwr.superlink.main import create_app

    # The package re-exports the function of the module's name: import the module itself.
    fs = importlib.import_module("flwr.superlink.cli.flower_superlink")

    # Flower's logger prints through its own handler; the runtime's root handler would print
    # every line a second time (and "Activated node_id" twice, which tests count).
    logging.getLogger("flwr").propagate = False
    sys.argv = ["flower-superlink", *flower_args, "--host", "127.0.0.1", "--port",
                str(internal_port)]
    config = fs._parse_superlink_lifespan_config()  # Flower's own parsing and checks
    app = create_app(config, fs.SuperLinkLifespan)
    # No access log: every SuperNode polls several times a second, and a line per request cost
    # the SuperLink's one process CPU that its requests wait for (7,000 lines in a 90 s run).
    options: dict[str, Any] = {"ssl_keyfile": config.ssl_keyfile,
                               "ssl_certfile": config.ssl_certfile, "access_log": False}
    internal = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=internal_port,
                                             lifespan="on", workers=1, **options))

    def state() -> dict[str, Any]:
        return dict(getattr(internal.lifespan, "state", {}) or {})

    public = [
        uvicorn.Server(uvicorn.Config(OnlyPaths(app, prefixes, state), host=host, port=port,
                                      lifespan="off", workers=1, **options))
        for prefixes, port in ((FLEET_PREFIXES, fleet_port), (CONTROL_PREFIXES, control_port))
    ]

    async def main() -> None:
        first = asyncio.create_task(internal.serve())
        while not internal.started:  # the lifespan (state, SuperExec) comes up first
            if first.done():
                await first
                return
            await asyncio.sleep(0.05)
        others = [asyncio.create_task(server.serve()) for server in public]
        done, _ = await asyncio.wait([first, *others], return_when=asyncio.FIRST_COMPLETED)
        for server in (internal, *public):  # one ended: stop them all
            server.should_exit = True
        await asyncio.gather(first, *others, return_exceptions=True)
        for task in done:
            task.result()

    asyncio.run(main())
