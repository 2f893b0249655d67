"""What runs is what was paid (issue 13, item 1): names, pinned configs, adoption.

Each test fails on the code before this change: child names were cut without a hash (two jobs
sharing their first 44 characters rendered the same trainer Job), the runtime config was a
mutable ConfigMap the runtime trusted as found, and children were adopted by name alone.
"""

from __future__ import annotations

import json

import pytest

from ppml_operator.reconcile import kinds, lifecycle
from ppml_operator.render.trainer import names
from ppml_runtime import contract as rc
from ppml_testing.fedjobs import make_fedjob
from ppml_testing.objects import budget, observed, training_job

assert kinds.INSTALLED


def _children(job: dict) -> list[dict]:
    kind = lifecycle.kind_of(job["kind"])
    obs = observed(job, {name: budget(name, epsilon="100", delta="1e-3")
                         for name in kind.budget_names(job["spec"])})
    return kind.render(obs, obs.price)


def test_two_long_names_sharing_their_first_44_characters_get_different_children() -> None:
    a = "clinic-records-training-run-with-a-long-name-" + "alpha"
    b = "clinic-records-training-run-with-a-long-name-" + "bravo"
    na, nb = names(a), names(b)
    for key in na:
        assert na[key] != nb[key], key
    assert len(na["job"]) <= 52 and len(na["service"]) <= 63
    assert names(a) == na  # stable: the same job always renders the same names
    assert names("digits")["job"] == "digits-trainer"  # short names are left alone


@pytest.mark.parametrize("job", [
    training_job(),
    make_fedjob("digits").clients(2).central(budget="fed-budget").obj(),
], ids=["PrivateTrainingJob", "FederatedJob"])
def test_every_container_is_pinned_to_the_immutable_config_it_was_rendered_with(job: dict
                                                                                ) -> None:
    children = _children(job)
    [cm] = [c for c in children if c["kind"] == "ConfigMap"]
    assert cm["immutable"] is True
    digest = rc.config_digest(cm["data"][rc.CONFIG_FILE])
    containers = []
    for child in children:
        if child["kind"] == "Pod":
            spec = child["spec"]
        elif child["kind"] == "Job":
            spec = child["spec"]["template"]["spec"]
        else:
            continue
        containers += [*spec.get("initContainers", []), *spec["containers"]]
    assert containers
    for container in containers:
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env[rc.ENV_CONFIG_SHA256] == digest, container["name"]


def test_the_runtime_refuses_a_replaced_config(tmp_path, monkeypatch) -> None:
    children = _children(training_job())
    [cm] = [c for c in children if c["kind"] == "ConfigMap"]
    text = cm["data"][rc.CONFIG_FILE]
    monkeypatch.setenv(rc.ENV_CONFIG_SHA256, rc.config_digest(text))
    path = tmp_path / "config.json"
    path.write_text(text)
    assert rc.load_config(path).job.uid == training_job()["metadata"]["uid"]
    tampered = json.loads(text)
    tampered["privacy"]["noiseMultiplier"] = "0.000000001"  # what an edit user would write
    path.write_text(json.dumps(tampered, indent=2))
    with pytest.raises(rc.ConfigTamperedError, match="refusing to touch any data"):
        rc.load_config(path)


def test_the_runtime_refuses_a_config_of_another_job(tmp_path, monkeypatch) -> None:
    [cm] = [c for c in _children(training_job()) if c["kind"] == "ConfigMap"]
    path = tmp_path / "config.json"
    path.write_text(cm["data"][rc.CONFIG_FILE])
    monkeypatch.delenv(rc.ENV_CONFIG_SHA256, raising=False)
    monkeypatch.setenv(rc.ENV_JOB_UID, "some-other-job-uid")
    with pytest.raises(rc.ConfigTamperedError, match="belongs to job UID"):
        rc.load_config(path)
