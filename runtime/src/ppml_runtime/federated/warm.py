"""Rounds without fixed polls or per-message processes: a warm ClientApp and prompt polling.

Flower 1.42's deployment engine puts four waits on every message's path, measured on these
machines at 15-25 s for one FedAvg round of three silos:

- an idle SuperNode sleeps a fixed 3 s between pulls from the SuperLink, and waits for its
  ClientApp's reply in 0.5 s steps (``flwr/supernode/start_client_internal.py``);
- the ServerApp's grid waits a fixed 3 s between pulls of the replies
  (``flwr/superlink/grid/http_grid.py``, ``send_and_receive``);
- the SuperNode's SuperExec polls for tasks every second and starts a fresh ``flwr-clientapp``
  process per message, which imports flwr, the app and torch again (2-6 s);
- whoever pulls a message's objects (a SuperNode its instructions, a ClientApp its input, the
  ServerApp its replies) and finds one not yet pushed (the sender pushes a message before its
  objects) waits 1 s, then 2, 4... up to 10 s (``flwr/supercore/constant.py``'s
  ``PULL_INITIAL_BACKOFF``/``PULL_BACKOFF_CAP``): at 10 silos about every other exchange had a
  silo or the ServerApp waiting 1-3 s this way.

Flower's warm executors (``flwr/supercore/superexec/executor/warm_executor*.py``) do not remove
the last cost here: they are Kubernetes pods that the SuperExec creates through the API server
(the SuperNode would need RBAC on pods) and that still run one task each. Instead:

- :func:`serve_client_tasks` is a SuperExec of our own that runs every ClientApp task of its
  SuperNode in one long-lived process: it acquires a task token from the SuperNode's Runtime API
  and runs exactly what ``flwr-clientapp`` runs for it (``flwr/supernode/runtime/
  run_clientapp.py``: pull the message, context and FAB, call the ClientApp, push the reply
  and the context), with the FAB's ClientApp loaded once and torch imported once, woken by the
  SuperNode's own thread when it stored a message;
- :func:`prompt_polls` replaces the fixed sleeps of those two Flower modules with a short
  back-off: a few milliseconds after activity, growing to :data:`IDLE_POLL_CAP` seconds while
  nothing happens (so idle SuperNodes still cost the SuperLink little), and to
  :data:`SERVER_POLL_CAP` for the one ServerApp;
- :func:`prompt_object_pulls` gives the object pulls the same back-off (and the same overall
  time limit as Flower's, ``PULL_MAX_TIME``).

``python -m ppml_runtime.federated.warm supernode ARGS`` runs ``flower-supernode ARGS`` with
all of them, in process isolation (Flower's own SuperExec is not started).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

LOG = logging.getLogger(__name__)

#: Longest wait between two polls of an idle SuperNode, ServerApp or task loop (seconds).
IDLE_POLL_CAP = 0.25
#: First wait after activity (seconds).
ACTIVE_POLL = 0.005
#: Longest wait between two pulls of the ServerApp for replies (seconds). Lower than the
#: SuperNodes': there is one ServerApp, and every round's exchange ends with its pull.
SERVER_POLL_CAP = 0.05


class BackoffClock:
    """A stand-in for a module's ``time`` whose long fixed sleeps become a short back-off.

    ``sleep(s)`` for ``s >= long_sleep`` waits ``ACTIVE_POLL`` after activity, doubling on
    every idle call up to ``cap``; shorter sleeps (Flower's 0.5 s reply waits) wait
    ``short_sleep``. :meth:`activity` resets the back-off. Everything else is ``time``'s.

    Given ``wake``, a long sleep ends as soon as that event is set (and clears it): a thread of
    the same process saying there is work now, so the poll need not wait out its step.
    """

    def __init__(self, long_sleep: float = 3.0, short_sleep: float = 0.005, *,
                 cap: float = IDLE_POLL_CAP, wake: threading.Event | None = None) -> None:
        self._long = long_sleep
        self._short = short_sleep
        self._cap = cap
        self._wake = wake
        self._next = ACTIVE_POLL

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def activity(self) -> None:
        """Poll promptly again: something just happened."""
        self._next = ACTIVE_POLL

    def sleep(self, seconds: float) -> None:
        """Sleep a back-off step instead of a long fixed poll, or a short step instead of 0.5 s."""
        if seconds < self._long:
            time.sleep(min(seconds, self._short))
            return
        if self._wake is None:
            time.sleep(self._next)
        elif self._wake.wait(self._next):
            self._wake.clear()
            self.activity()
            return
        self._next = min(self._next * 2, self._cap)


def prompt_polls(module: ModuleType, *, activity_hook: str | None = None,
                 cap: float = IDLE_POLL_CAP,
                 on_activity: Callable[[], None] | None = None) -> BackoffClock:
    """Give ``module`` (a Flower module that did ``import time``) a :class:`BackoffClock`.

    ``activity_hook`` names a function of the module whose non-``None`` result means activity
    (the SuperNode's ``_pull_and_store_message`` returns a run ID when it pulled a message);
    ``on_activity`` is told too. ``cap`` is the longest step of the back-off.
    """
    clock = BackoffClock(cap=cap)
    module.time = clock  # type: ignore[attr-defined]
    if activity_hook is not None:
        original = getattr(module, activity_hook)

        def hooked(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            if result is not None:
                clock.activity()
                if on_activity is not None:
                    on_activity()
            return result

        setattr(module, activity_hook, hooked)
    return clock


def prompt_object_pulls() -> None:
    """Retry an object not yet pushed after milliseconds, not Flower's 1 s, 2 s, 4 s...

    Both of Flower's pull functions (``flwr/supercore/inflatable/inflatable_utils.py``) take the
    back-off as keyword defaults, which every caller in flwr 1.42 leaves alone; the try limit
    goes (a short back-off would reach Flower's 500 tries in about two minutes) and the time
    limit, ``max_time`` (``PULL_MAX_TIME``, 2 hours), stays what bounds a pull.
    """
    from flwr.supercore.inflatable import inflatable_utils

    for function in (inflatable_utils.pull_objects,
                     inflatable_utils.pull_and_inflate_object_from_tree):
        defaults = function.__kwdefaults__
        assert defaults is not None  # keyword-only parameters with defaults
        defaults["initial_backoff"] = ACTIVE_POLL
        defaults["backoff_cap"] = IDLE_POLL_CAP
        defaults["max_tries_per_object"] = None


#: Set to 1 to keep Flower's own fixed polls in a ServerApp (benchmarks/federated.py's
#: baseline of Flower's processes with their defaults runs the same app with it).
ENV_FLOWER_POLLS = "PPML_FEDERATION_FLOWER_POLLS"


def prompt_server_polls() -> None:
    """Make the ServerApp's grid pull replies promptly (it sleeps 3 s between pulls)."""
    import os

    from flwr.superlink.grid import http_grid

    if os.environ.get(ENV_FLOWER_POLLS) == "1":
        return

    prompt_object_pulls()
    if not isinstance(getattr(http_grid, "time", None), BackoffClock):
        clock = prompt_polls(http_grid, cap=SERVER_POLL_CAP)
        original = http_grid.HttpGrid.push_messages

        def push_messages(self: Any, *args: Any, **kwargs: Any) -> Any:
            clock.activity()  # replies to these messages are what the next pulls wait for
            return original(self, *args, **kwargs)

        http_grid.HttpGrid.push_messages = push_messages  # type: ignore[method-assign]


class _WarmApps:
    """ClientApps loaded once per FAB hash (installing a FAB and importing its app is slow)."""

    def __init__(self) -> None:
        self._apps: dict[str, Any] = {}

    def get(self, run: Any, fab: Any) -> Any:
        from flwr.cli.install import install_from_fab
        from flwr.clientapp.utils import get_load_client_app_fn

        app = self._apps.get(fab.hash_str)
        if app is None:
            install_from_fab(fab.content, skip_prompt=True)
            load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
            app = load(run.fab_id, run.fab_version, fab.hash_str)
            self._apps[fab.hash_str] = app
        return app


def _task_heartbeat(client: Any) -> Callable[[], bool]:
    """Return a task's heartbeat that never signals this process.

    Flower's (``flwr/supercore/heartbeat.py``, ``make_task_heartbeat_fn_http``) raises SIGINT
    in its own process when the SuperNode no longer knows the task: right for a
    ``flwr-clientapp`` process, which should end then, but here the process is the SuperNode
    itself. Seen at 10 silos: a heartbeat delayed past its task's end stopped a SuperNode
    mid-round. A failed heartbeat is retried (Flower's back-off) until the task stops it.
    """
    from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest

    def send() -> bool:
        try:
            res = client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
        except Exception as err:  # refused, unreachable: never fatal to the SuperNode
            LOG.debug("task heartbeat failed: %s", err)
            return False
        return bool(res.success)

    return send


def run_client_task(runtime_api_address: str, token: str, apps: _WarmApps) -> None:
    """Run one ClientApp task in this process, as ``flwr-clientapp --token`` would.

    The steps and their order are those of ``flwr.supernode.runtime.run_clientapp`` (Flower
    1.42), without its process exit: pull the task input, call the ClientApp, push the reply
    (an error reply when the app raised) and finally the context and status.
    """
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    retry_invoker = make_simple_http_retry_invoker()
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=True,
        root_certificates=None,
        interceptors=[
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(token),
        ],
        retry_invoker=retry_invoker,
    )
    heartbeat = HeartbeatSender(_task_heartbeat(client))
    message = reply = context = None
    sub_status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
    try:
        heartbeat.start()
        message, context, run, fab = pull_task_input(client)
        reply = apps.get(run, fab)(message=message, context=context)
        sub_status, details = SubStatus.COMPLETED, ""
    except Exception as ex:  # reported to the ServerApp, as Flower does
        reason = f"{type(ex)}:<'{ex}'>"
        LOG.exception("ClientApp raised an exception")
        details = reason
        if message is not None:
            reply = Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                reply_to=message,
            )
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        finally:
            # Stopped before the task ends: the SuperNode forgets the task's token with its
            # output, and a heartbeat sent after that is refused.
            if heartbeat.is_running:
                heartbeat.stop()
            retry_invoker.max_tries = 1
            push_task_output(client=client, context=context, sub_status=sub_status,
                             details=details)
            client.close()


def serve_client_tasks(runtime_api_address: str, stop: threading.Event | None = None,
                       wake: threading.Event | None = None) -> None:
    """Run every ClientApp task the SuperNode at ``runtime_api_address`` hands out, in process.

    Polls its Runtime API with :class:`BackoffClock`'s back-off and runs the tasks one at a
    time; ``wake`` (set when the SuperNode of this process pulled a message) ends a wait at
    once, so a task starts as soon as its message is stored, not at the next step.
    """
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    stop = stop or threading.Event()
    clock = BackoffClock(long_sleep=0.0, wake=wake)
    apps = _WarmApps()
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=True,
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    while not stop.is_set():
        try:
            res = client.AcquireTask(
                AcquireTaskRequest(supported_task_types=[str(TaskType.CLIENT_APP)])
            )
        except Exception:  # the SuperNode's API is not up yet, or restarting
            time.sleep(IDLE_POLL_CAP)
            continue
        if res.HasField("task") and res.token:
            try:
                run_client_task(runtime_api_address, res.token, apps)
            except Exception:  # a reply that could not be pushed: the round fails, not the node
                LOG.exception("ClientApp task could not report back to the SuperNode")
            clock.activity()
            continue
        clock.sleep(1.0)


def _option(argv: list[str], name: str, default: str) -> str:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def run_warm_supernode(argv: list[str]) -> None:
    """Run ``flower-supernode`` (``argv``) with a warm in-process ClientApp and prompt polls."""
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli.flower_supernode import flower_supernode

    host = _option(argv, "--host", "127.0.0.1")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    port = _option(argv, "--port", "9094")
    message_stored = threading.Event()
    prompt_polls(start_client_internal, activity_hook="_pull_and_store_message",
                 on_activity=message_stored.set)
    prompt_object_pulls()
    threading.Thread(
        target=serve_client_tasks, args=(f"{host}:{port}",), kwargs={"wake": message_stored},
        name="warm-clientapp", daemon=True,
    ).start()
    sys.argv = ["flower-supernode", *argv, "--isolation", "process"]
    flower_supernode()


if __name__ == "__main__":
    if sys.argv[1:2] != ["supernode"]:
        sys.exit("usage: python -m ppml_runtime.federated.warm supernode FLOWER_SUPERNODE_ARGS")
    run_warm_supernode(sys.argv[2:])
