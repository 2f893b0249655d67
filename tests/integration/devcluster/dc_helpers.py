"""Helpers for the devcluster tests: create objects and wait on pods through the REST client."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from devcluster.kubeapi import ApiError, Client

Obj = dict[str, Any]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except ApiError as err:
            last = err
        else:
            if last:
                return last
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


class Kube:
    """Create and read namespaced objects of one test namespace."""

    def __init__(self, api: Client, ns: str) -> None:
        self.api, self.ns = api, ns

    def path(self, kind: str, name: str = "", group: str = "") -> str:
        base = f"/apis/{group}" if group else "/api/v1"
        p = f"{base}/namespaces/{self.ns}/{kind}"
        return f"{p}/{name}" if name else p

    def create(self, kind: str, body: Obj, group: str = "") -> Obj:
        obj: Obj = self.api.post(self.path(kind, group=group), body)
        return obj

    def get(self, kind: str, name: str, group: str = "") -> Obj:
        obj: Obj = self.api.get(self.path(kind, name, group))
        return obj

    def pod(self, name: str) -> Obj:
        return self.get("pods", name)

    def wait_phase(self, name: str, phases: tuple[str, ...] = ("Succeeded", "Failed"),
                   timeout: float = 30.0) -> Obj:
        def check() -> Obj | None:
            p = self.pod(name)
            return p if p.get("status", {}).get("phase") in phases else None

        pod: Obj = wait_for(f"pod {self.ns}/{name} in {phases}", check, timeout)
        return pod

    def gone(self, kind: str, name: str, timeout: float = 30.0, group: str = "") -> float:
        """Wait until the object is gone; return the seconds it took."""
        t0 = time.monotonic()

        def check() -> bool:
            try:
                self.get(kind, name, group)
            except ApiError as err:
                if err.status == 404:
                    return True
                raise
            return False

        wait_for(f"{kind} {self.ns}/{name} to be deleted", check, timeout)
        return time.monotonic() - t0


def pod_manifest(name: str, code: str, **spec: Any) -> Obj:
    """Return a one-container pod running ``python -c code`` (restartPolicy Never)."""
    container: Obj = {"name": "main", "image": "python:3.11", "command": ["python", "-c", code]}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": spec.pop("labels", {"app": name})},
        "spec": {"restartPolicy": "Never", "containers": [container],
                 "terminationGracePeriodSeconds": 5, **spec},
    }


def terminated(pod: Obj, index: int = 0) -> Obj:
    """Return ``containerStatuses[index].state.terminated`` of ``pod``."""
    st: Obj = pod["status"]["containerStatuses"][index]["state"]["terminated"]
    return st
