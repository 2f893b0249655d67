"""No fixed polls on a round's path: the back-off that replaces Flower's 3 s sleeps."""

from __future__ import annotations

import types

import pytest

from ppml_runtime.federated import warm


@pytest.fixture
def slept(monkeypatch):
    calls: list[float] = []
    monkeypatch.setattr(warm.time, "sleep", calls.append)
    return calls


def test_a_long_fixed_poll_becomes_a_back_off_that_resets_on_activity(slept):
    clock = warm.BackoffClock()
    for _ in range(10):
        clock.sleep(3)
    assert slept[0] == warm.ACTIVE_POLL
    assert slept == sorted(slept) and max(slept) == warm.IDLE_POLL_CAP
    clock.activity()
    clock.sleep(3)
    assert slept[-1] == warm.ACTIVE_POLL


def test_short_waits_for_a_reply_are_shortened_and_other_time_functions_untouched(slept):
    clock = warm.BackoffClock()
    clock.sleep(0.5)
    assert slept == [0.005]
    assert clock.monotonic is warm.time.monotonic


def test_a_flower_module_gets_the_clock_and_its_pulls_count_as_activity(slept):
    module = types.ModuleType("fake_flower")
    module.time = warm.time  # type: ignore[attr-defined]
    results = iter([None, None, 42])
    module._pull = lambda: next(results)  # type: ignore[attr-defined]
    clock = warm.prompt_polls(module, activity_hook="_pull")
    assert module.time is clock  # type: ignore[attr-defined]
    module._pull()  # type: ignore[attr-defined]
    clock.sleep(3)
    module._pull()  # type: ignore[attr-defined]
    clock.sleep(3)
    assert slept == [warm.ACTIVE_POLL, 2 * warm.ACTIVE_POLL]
    assert module._pull() == 42  # type: ignore[attr-defined]
    clock.sleep(3)
    assert slept[-1] == warm.ACTIVE_POLL


def test_the_supernode_command_runs_flower_supernode_through_the_warm_launcher():
    from fed_builders import fed

    from ppml_runtime.federated import flwr_cli

    cmd = flwr_cli.supernode_command(fed().obj(), "silo-1", "/data/silo-1.npz", port=9094)
    assert cmd[1:4] == ["-m", "ppml_runtime.federated.warm", "supernode"]
    assert warm._option(cmd, "--port", "") == "9094"


def test_an_object_not_yet_pushed_is_pulled_again_within_milliseconds_not_seconds(monkeypatch):
    """A message's objects arrive just after the message (flwr 1.42 pushes the message first).

    Flower retries such a pull after 1 s, 2 s, 4 s... (``PULL_INITIAL_BACKOFF``); at 10 silos
    every other exchange had someone waiting there. The waits are recorded, not slept.
    """
    import threading

    from flwr.supercore.inflatable import inflatable_utils as pulls

    flowers = {"initial_backoff": pulls.PULL_INITIAL_BACKOFF,
               "backoff_cap": pulls.PULL_BACKOFF_CAP,
               "max_tries_per_object": pulls.PULL_MAX_TRIES_PER_OBJECT}
    for function in (pulls.pull_objects, pulls.pull_and_inflate_object_from_tree):
        # Flower's own defaults (importing the ServerApp module earlier already changed them).
        monkeypatch.setattr(function, "__kwdefaults__", {**function.__kwdefaults__, **flowers})
    waits: list[float] = []

    class RecordedWaits(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            if timeout is not None:
                waits.append(timeout)
            return super().wait(0)

    monkeypatch.setattr(pulls, "threading",
                        types.SimpleNamespace(Event=RecordedWaits, Lock=threading.Lock))

    def pushed_after(tries: int):
        count = {"n": 0}

        def pull(object_id: str) -> bytes:
            count["n"] += 1
            if count["n"] <= tries:
                raise pulls.ObjectUnavailableError(object_id)
            return b"content"

        return pull

    assert pulls.pull_objects(["obj"], pushed_after(1)) == {"obj": b"content"}
    assert waits[0] >= 0.8  # Flower's own first retry: 1 s +-20 %
    waits.clear()

    warm.prompt_object_pulls()
    assert pulls.pull_objects(["obj"], pushed_after(8)) == {"obj": b"content"}
    assert len(waits) == 8
    assert waits[0] <= warm.ACTIVE_POLL * 1.2
    assert max(waits) <= warm.IDLE_POLL_CAP * 1.2
    # No try limit any more (a short back-off would spend Flower's 500 tries in two minutes);
    # the time limit stays Flower's.
    defaults = pulls.pull_and_inflate_object_from_tree.__kwdefaults__
    assert defaults["max_tries_per_object"] is None
    assert defaults["max_time"] == pulls.PULL_MAX_TIME


def test_a_message_stored_by_the_supernode_wakes_its_task_loop_and_resets_the_back_off():
    import threading

    stored = threading.Event()
    module = types.ModuleType("fake_supernode")
    module.time = warm.time  # type: ignore[attr-defined]
    module._pull = lambda: 7  # type: ignore[attr-defined]
    warm.prompt_polls(module, activity_hook="_pull", on_activity=stored.set)
    task_loop = warm.BackoffClock(long_sleep=0.0, wake=stored)
    for _ in range(3):  # idle: 5, 10, 20 ms
        task_loop.sleep(1.0)
    assert task_loop._next == 8 * warm.ACTIVE_POLL
    module._pull()  # type: ignore[attr-defined]  # the SuperNode pulled and stored a message
    assert stored.is_set()
    task_loop.sleep(1.0)  # returns at once: the event was set
    assert not stored.is_set() and task_loop._next == warm.ACTIVE_POLL


def test_the_serverapp_polls_for_replies_with_a_shorter_cap(slept):
    clock = warm.BackoffClock(cap=warm.SERVER_POLL_CAP)
    for _ in range(10):
        clock.sleep(3)
    assert max(slept) == warm.SERVER_POLL_CAP < warm.IDLE_POLL_CAP


def test_a_heartbeat_for_a_task_the_supernode_forgot_is_a_failed_beat_not_a_sigint(monkeypatch):
    """Flower's task heartbeat raises SIGINT in its process; ours runs inside the SuperNode."""
    import signal

    import httpx

    raised: list[int] = []
    monkeypatch.setattr(signal, "raise_signal", raised.append)

    class Forgotten:
        def __init__(self, outcome):
            self.outcome = outcome

        def SendTaskHeartbeat(self, request):  # Flower's method name
            if isinstance(self.outcome, Exception):
                raise self.outcome
            return types.SimpleNamespace(success=self.outcome)

    refused = httpx.HTTPStatusError(
        "401", request=httpx.Request("POST", "http://x"), response=httpx.Response(401))
    assert warm._task_heartbeat(Forgotten(refused))() is False
    assert warm._task_heartbeat(Forgotten(False))() is False
    assert warm._task_heartbeat(Forgotten(True))() is True
    assert raised == []
