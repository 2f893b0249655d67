"""Helpers of the operator's integration tests: the operator as a subprocess, manifests, waits.

The operator runs as ``python -m ppml_operator --namespace NS`` (so a crash point's
``os._exit`` kills only it), with a fake trainer command (``PPML_TRAINER_COMMAND``) that reads
the contract config the operator rendered and writes a report to the termination log. Its
behaviour depends on the job's name:

- ``slow-*`` sleeps 300 s (a job that is running while the test acts);
- ``fail-*`` reports an error and exits 1;
- anything else sleeps ``FAKE_SLEEP`` seconds (0.3 by default) and succeeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppml_operator import k8s
from ppml_testing.conditions import condition as condition  # re-exported for the tests
from ppml_testing.conditions import is_true

REPO = Path(__file__).resolve().parents[3]

FAKE_TRAINER = r"""
import json, os, sys, time
cfg = json.load(open(os.environ.get("PPML_CONFIG", "/etc/ppml/config.json")))
name = os.environ.get("PPML_JOB_NAME", "")
path = os.environ.get("PPML_TERMINATION_MESSAGE_PATH", "/dev/termination-log")
p = cfg["privacy"]
def report(status, **extra):
    with open(path, "w") as out:
        json.dump({"status": status, "stepsCompleted": p["steps"], **extra}, out)
if name.startswith("slow-"):
    time.sleep(300)
if name.startswith("fail-"):
    report("error", error="the fake trainer was told to fail")
    sys.exit(1)
time.sleep(float(os.environ.get("FAKE_SLEEP", "0.3")))
report("ok", epsilon=float(p["chargedEpsilon"]) * 0.99, delta=float(p["delta"]), testAccuracy=0.9)
"""

Obj = dict[str, Any]


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 60.0,
             interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")




@dataclass
class Operator:
    """One ``python -m ppml_operator`` subprocess."""

    namespace: str
    kubeconfig: Path
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, *args: str, **env: str) -> Operator:
        self.starts += 1
        full = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PPML_RECONCILE_INTERVAL": "1",
            "PPML_TRAINER_COMMAND": json.dumps(["python", "-c", FAKE_TRAINER]),
            "PYTHONUNBUFFERED": "1",
            **self.env,
            **env,
        }
        with open(self.log_dir / f"operator-{self.namespace}-{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ppml_operator", "--namespace", self.namespace, *args],
                env=full, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            )
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait_exit(self, timeout: float = 90.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")
            for p in sorted(self.log_dir.glob(f"operator-{self.namespace}-*.log"))
        )


@dataclass
class Kube:
    """Test-side access to one namespace, through the operator's own client module."""

    client: k8s.Client
    namespace: str
    kubectl: Callable[..., subprocess.CompletedProcess[str]]

    def apply(self, text: str) -> None:
        result = self.kubectl("apply", "-n", self.namespace, "-f", "-", input=text)
        assert result.returncode == 0, result.stderr

    def create(self, obj: Obj) -> Obj:
        obj = {**obj, "metadata": {**obj["metadata"], "namespace": self.namespace}}
        return self.client.create(obj)

    def get(self, kind: str, name: str) -> Obj | None:
        return self.client.get(kind, self.namespace, name)

    def list(self, kind: str, selector: str | None = None) -> list[Obj]:
        return self.client.list(kind, self.namespace, selector)

    def delete(self, kind: str, name: str) -> None:
        self.client.delete(kind, self.namespace, name)

    def gone(self, kind: str, name: str, timeout: float = 60.0) -> None:
        wait_for(f"{kind} {name} gone", lambda: self.get(kind, name) is None, timeout)

    def job_when(self, name: str, type_: str, timeout: float = 60.0,
                 kind: str = "PrivateTrainingJob") -> Obj:
        return wait_for(
            f"{kind} {name} {type_}",
            lambda: (j := self.get(kind, name)) is not None and is_true(j, type_) and j,
            timeout,
        )


def budget(name: str, epsilon: str = "3", delta: str = "1e-5", composition: str = "RDP") -> str:
    return json.dumps({
        "apiVersion": "ppml.dev/v1alpha1", "kind": "PrivacyBudget",
        "metadata": {"name": name},
        "spec": {"epsilon": epsilon, "delta": delta, "composition": composition},
    })


def job_manifest(name: str, budget_name: str = "clinic", *, noise: str = "1.1",
                 epochs: int = 1, node_selector: dict[str, str] | None = None,
                 **spec: Any) -> Obj:
    body: Obj = {
        "apiVersion": "ppml.dev/v1alpha1", "kind": "PrivateTrainingJob",
        "metadata": {"name": name},
        "spec": {
            "budgetRef": {"name": budget_name},
            "privacy": {"noiseMultiplier": noise, "delta": "1e-5"},
            "data": {"source": "Builtin", "builtin": {"name": "Digits"}, "numRecords": 1797},
            "model": {"architecture": "LogisticRegression"},
            "training": {"epochs": epochs, "batchSize": 64, "learningRate": "0.1"},
            **spec,
        },
    }
    if node_selector:
        body["spec"]["runtime"] = {"nodeSelector": node_selector}
    return body


def job(name: str, budget_name: str = "clinic", **kwargs: Any) -> str:
    return json.dumps(job_manifest(name, budget_name, **kwargs))


NOWHERE = {"ppml.dev/test-node": "none"}
"""A node selector no node matches: the pods stay Pending (never started)."""


def fedjob_manifest(name: str, budget_name: str = "clinic", *, noise: str = "1.1",
                    node_selector: dict[str, str] | None = None, rounds: int | None = None,
                    **_: Any) -> Obj:
    """A local-DP FederatedJob of one silo charging ``budget_name`` (real Flower processes).

    Jobs named ``slow-*`` run 3 rounds, so they are still running while a test acts.
    """
    from ppml_testing.fedjobs import make_fedjob

    builder = make_fedjob(name).clients(1).rounds(rounds or (3 if name.startswith("slow-")
                                                             else 1))
    body = builder.local(noise=noise, delta="1e-5", job_budget=budget_name).obj()
    body["metadata"] = {"name": name}
    if node_selector:
        body["spec"]["runtime"] = {"nodeSelector": node_selector}
    return body


@dataclass(frozen=True)
class Flavor:
    """One kind of job as the reliability tests drive it: its manifests and its runner."""

    kind: str
    manifest: Callable[..., Obj]
    runner_suffix: str

    def text(self, name: str, budget_name: str = "clinic", **kwargs: Any) -> str:
        return json.dumps(self.manifest(name, budget_name, **kwargs))

    def cost(self, copies: int = 1, delta: str = "1e-5", **kwargs: Any) -> Any:
        """Return the epsilon of ``copies`` such jobs composed on one RDP budget at ``delta``."""
        from decimal import Decimal

        from ppml_operator.reconcile import kinds, ledger, lifecycle

        assert kinds.INSTALLED
        obj = self.manifest("priced", **kwargs)
        obj["metadata"].update({"uid": "priced", "namespace": "ns", "generation": 1})
        price = lifecycle.kind_of(self.kind).price(obj)
        [charge] = price.charges
        return ledger._rdp_epsilon(list(charge.events) * copies, Decimal(delta))


PTJ = Flavor("PrivateTrainingJob", job_manifest, "trainer")
FEDJOB = Flavor("FederatedJob", fedjob_manifest, "submit")
FLAVORS = (PTJ, FEDJOB)


def drop_finalizers(client: k8s.Client, namespace: str) -> None:
    """Remove the operator's finalizers once it is stopped, so the namespace can go away."""
    for kind in ("PrivateTrainingJob", "FederatedJob", "PrivacyBudget"):
        for item in client.list(kind, namespace):
            if item["metadata"].get("finalizers"):
                client.patch(kind, namespace, item["metadata"]["name"],
                             {"metadata": {"finalizers": None}})
