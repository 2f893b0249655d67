"""What runs is what was paid, against the real API server (issue 13, item 1).

- A child whose name is taken by an object of another owner is never adopted: the job never
  gets pods under someone else's Job, ConfigMap or ServiceAccount.
- The runtime config is an immutable ConfigMap: an update is refused by the API server.
"""

from __future__ import annotations

import json
import time

from op_helpers import Kube, budget, job, wait_for


def test_an_object_squatting_a_childs_name_is_not_adopted(kube: Kube) -> None:
    # Another owner's ConfigMap sits where the job's config would go (a pre-created object
    # with numbers of its own choosing).
    kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "squatted-config",
                              "labels": {"ppml.dev/job-uid": "somebody-else"}},
                 "data": {"config.json": json.dumps({"privacy": {"noiseMultiplier": "1e-9"}})}})
    kube.apply(budget("clinic", epsilon="3"))
    kube.apply(job("squatted"))
    uid = wait_for("squatted admitted", lambda: (j := kube.get("PrivateTrainingJob", "squatted"))
                   and (j.get("status") or {}).get("privacy") and j["metadata"]["uid"])
    time.sleep(5)  # several passes: none may get past the foreign ConfigMap
    assert kube.get("Job", "squatted-trainer") is None
    assert kube.list("Pod", f"ppml.dev/job-uid={uid}") == []
    squatter = kube.get("ConfigMap", "squatted-config")
    assert squatter["metadata"]["labels"]["ppml.dev/job-uid"] == "somebody-else"
    events = [e for e in kube.list("Event")
              if (e.get("involvedObject") or {}).get("uid") == uid]
    assert any("not adopted" in (e.get("message") or "") for e in events), events


def test_the_runtime_config_cannot_be_edited(kube: Kube, devcluster) -> None:
    kube.apply(budget("clinic", epsilon="3"))
    kube.apply(job("pinned"))
    cm = wait_for("config", lambda: kube.get("ConfigMap", "pinned-config"))
    assert cm["immutable"] is True
    result = devcluster.kubectl(
        "patch", "configmap", "pinned-config", "-n", kube.namespace, "--type=merge",
        "-p", json.dumps({"data": {"config.json": "{}"}}))
    assert result.returncode != 0 and "immutable" in result.stderr.lower(), result.stderr
