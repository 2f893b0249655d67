"""Checkpoint and resume: a restarted trainer never runs more steps than were paid for."""

from __future__ import annotations

import pytest
import torch

from ppml_runtime.training.checkpoint import DirectoryCheckpointing
from ppml_runtime.training.dp_sgd import ArrayDataset, make_privacy_engine, train_private
from ppml_runtime.training.errors import InvalidConfigError

from .dp_helpers import params

STEPS, RATE, EVERY = 23, 0.25, 5
IDENTITY = {"jobUid": "uid-1", "noiseMultiplier": "1.0", "sampleRate": "0.25", "steps": STEPS}


class Crash(Exception):
    """Stands in for a pod killed mid-training."""


def data():
    gen = torch.Generator().manual_seed(0)
    return ArrayDataset(
        torch.randn(40, 4, generator=gen), torch.randint(0, 3, (40,), generator=gen)
    )


def attempt(checkpointing, resume=None, crash_at=None, snapshots=None):
    executed = []

    def on_step(step, loss, epsilon):
        executed.append(step)
        if snapshots is not None:
            snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}
        if step == crash_at:
            raise Crash

    model = torch.nn.Linear(4, 3)
    p = params(steps=STEPS, sample_rate=RATE, noise_multiplier=1.0)
    try:
        result = train_private(
            model, data(), p, resume=resume, checkpointing=checkpointing, on_step=on_step
        )
    except Crash:
        result = None
    return result, executed


def epsilon_of_steps(steps: int) -> float:
    engine = make_privacy_engine("rdp")
    engine.accountant.history = [(1.0, RATE, steps)]
    return float(engine.accountant.get_epsilon(delta=1e-5))


@pytest.mark.parametrize(
    ("crash_at", "resumed_model_step", "spent_before"),
    [
        pytest.param(12, 10, 15, id="crash mid-chunk: lost steps are charged, not rerun"),
        pytest.param(11, 10, 15, id="crash just after a checkpoint"),
        pytest.param(3, 0, 5, id="crash before the first checkpoint"),
    ],
)
def test_resume_never_exceeds_paid_steps(tmp_path, crash_at, resumed_model_step, spent_before):
    checkpointing = DirectoryCheckpointing(tmp_path, IDENTITY, every=EVERY)
    snapshots: dict = {}
    _, first = attempt(checkpointing, crash_at=crash_at, snapshots=snapshots)
    assert first[-1] == crash_at

    resume = checkpointing.load()
    assert (resume.steps_spent, resume.model_step) == (spent_before, resumed_model_step)
    if resumed_model_step:
        for key, value in resume.model_state.items():
            torch.testing.assert_close(value, snapshots[resumed_model_step][key])

    result, second = attempt(checkpointing, resume=resume)
    assert len(first) + len(second) <= STEPS
    assert second == list(range(spent_before + 1, STEPS + 1))
    assert result.steps_completed == STEPS
    assert sum(n for _, _, n in result.events) == STEPS  # every reserved step is charged
    assert result.epsilon == pytest.approx(epsilon_of_steps(STEPS), rel=1e-9)
    assert result.resumed_from_step == resumed_model_step
    assert result.steps_discarded == spent_before - resumed_model_step


def test_restart_after_completion_trains_no_more(tmp_path):
    checkpointing = DirectoryCheckpointing(tmp_path, IDENTITY, every=EVERY)
    done, first = attempt(checkpointing)
    assert len(first) == STEPS and done.steps_completed == STEPS
    again, second = attempt(checkpointing, resume=checkpointing.load())
    assert second == []
    assert again.steps_completed == STEPS
    assert again.epsilon == pytest.approx(done.epsilon, rel=1e-9)


def test_checkpoint_of_another_job_is_refused(tmp_path):
    attempt(DirectoryCheckpointing(tmp_path, IDENTITY, every=EVERY), crash_at=7)
    other = DirectoryCheckpointing(tmp_path, IDENTITY | {"jobUid": "uid-2"}, every=EVERY)
    with pytest.raises(InvalidConfigError, match="another job"):
        other.load()


def test_empty_directory_has_nothing_to_resume(tmp_path):
    assert DirectoryCheckpointing(tmp_path / "new", IDENTITY).load() is None
