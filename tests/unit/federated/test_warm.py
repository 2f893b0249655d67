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
