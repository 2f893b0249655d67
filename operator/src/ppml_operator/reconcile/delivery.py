"""The model's way back to the analyst, shared by every kind that delivers one.

Once a job's runner completed and reported the SHA-256 of the model it wrote to the
operator-owned output claim, :func:`deliver` drives the steps of ``render/delivery.py``: the
export pod (operator image) serves the files in the execution namespace, the delivery Job in
the job's namespace fetches and verifies them into ``spec.output.model.claimName``, and
``status.output`` names the result as ``pvc://<claim>/<path>``. A PrivateTrainingJob's trainer
and a FederatedJob's ServerApp write the model; both adapters call this one function.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ppml_operator.api import conditions as c
from ppml_operator.reconcile.lifecycle import Ending, Observed, job_condition, set_condition
from ppml_operator.reconcile.plan import Deletion, Plan
from ppml_operator.render import delivery

Obj = dict[str, Any]


def wants_model(job: Obj) -> bool:
    """Return whether the job asks for its model (``spec.output.model``)."""
    return bool(((job.get("spec") or {}).get("output") or {}).get("model"))


def teardown(job: Obj) -> list[Deletion]:
    """Return the deletions of the export pod, its policy and the operator-owned claim."""
    if not wants_model(job):
        return []
    n = delivery.names(job)
    return [Deletion("Pod", n["export"]), Deletion("NetworkPolicy", n["export"]),
            Deletion("PersistentVolumeClaim", n["output"])]


def deliver(observed: Observed, sha256: str | None, status: Obj, plan: Plan, now: datetime,
            gen: int | None, *, runner: str, done: str, committed: str) -> Ending | None:
    """Take a completed job's model to the job's claim.

    Parameters
    ----------
    observed
        The job and its children.
    sha256
        The SHA-256 of ``model.safetensors`` the runner reported (None: it reported none).
    status, plan, now, gen
        As in the lifecycle's ``track``.
    runner
        How messages name what wrote the model (``trainer``, ``ServerApp``).
    done
        The sentence saying the work ended (``every worker finished``).
    committed
        The sentence saying the charges are committed.

    Returns
    -------
    Ending or None
        The ending once the delivery Job completed or failed, None while the model is on its
        way.

    """
    job = observed.job
    if not sha256:
        return Ending(False, c.DELIVERY_FAILED,
                      f"the {runner} finished but reported no model to deliver; {committed}")
    uri = delivery.model_uri(job)
    n = delivery.names(job)
    fetcher = observed.child("Job", n["delivery"], str(job["metadata"]["namespace"]))
    if fetcher is not None and job_condition(fetcher, "Complete") is not None:
        status["output"] = {"uri": uri, "modelSha256": sha256,
                            "deliveryTime": c.format_time(now)}
        return Ending(True, c.SUCCEEDED,
                      f"{done} and the model was delivered to {uri}; {committed}")
    if fetcher is not None and job_condition(fetcher, "Failed") is not None:
        model = ((job.get("spec") or {}).get("output") or {}).get("model") or {}
        return Ending(False, c.DELIVERY_FAILED,
                      f"the model could not be delivered to {uri}: Job {n['delivery']} in this "
                      f"namespace failed; check that claim {model.get('claimName')} exists, is "
                      f"writable and has room, and that {delivery.model_path(job)} did not "
                      f"exist on it; {committed}")
    export = delivery.export_pod(job, list(observed.pods))
    pod_status = (export or {}).get("status") or {}
    if export is None:
        plan.create.extend(delivery.render_export(job, observed.settings))
    elif pod_status.get("phase") in ("Succeeded", "Failed") and fetcher is None:
        plan.deletions.append(Deletion("Pod", n["export"], uid=export["metadata"].get("uid")))
    elif fetcher is None and pod_status.get("phase") == "Running" and pod_status.get("podIP"):
        plan.create.append(delivery.render_delivery(job, observed.settings,
                                                    str(pod_status["podIP"]), sha256))
    set_condition(status, c.RUNNING, False, c.DELIVERING_MODEL,
                  f"the {runner} finished; delivering the model to {uri}", now=now, gen=gen)
    return None
