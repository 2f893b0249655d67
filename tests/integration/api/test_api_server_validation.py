"""The generated CRDs on the real API server: accepted, explained, and refusing bad manifests.

Every manifest in ``invalid/`` is applied with ``--dry-run=server`` and must be refused with the
fragments its ``# expect:`` lines name; the examples must be accepted; privacy-relevant fields
must be immutable after creation while operational ones stay editable.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CORPUS = sorted((HERE / "invalid").glob("*.yaml"))
EXAMPLES = sorted(
    p
    for p in (REPO / "examples").rglob("*.yaml")
    if any(
        str((d or {}).get("apiVersion", "")).startswith("ppml.dev/")
        for d in yaml.safe_load_all(p.read_text())
    )
)
CRD_NAMES = (
    "privacybudgets.ppml.dev",
    "privatedatasets.ppml.dev",
    "privatetrainingjobs.ppml.dev",
    "federatedjobs.ppml.dev",
)


def dump(obj: dict) -> str:
    return json.dumps(obj)


@pytest.fixture(scope="module")
def cluster(devcluster):
    applied = devcluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds")
    )
    assert applied.returncode == 0, applied.stderr
    waited = devcluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *[f"crd/{name}" for name in CRD_NAMES],
    )
    assert waited.returncode == 0, waited.stderr
    return devcluster


@pytest.fixture(scope="module")
def ns(cluster) -> Iterator[str]:
    name = f"api-{secrets.token_hex(3)}"
    made = cluster.kubectl("create", "namespace", name)
    assert made.returncode == 0, made.stderr
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def test_crds_are_established_with_names_and_category(cluster, ns):
    for name in CRD_NAMES:
        got = cluster.kubectl("get", f"crd/{name}", "-o", "json", check=True)
        conditions = {
            c["type"]: c["status"] for c in json.loads(got.stdout)["status"]["conditions"]
        }
        assert conditions["Established"] == "True"
        assert conditions["NamesAccepted"] == "True"
    listed = cluster.kubectl("get", "ppml,pbudget,ptj,fedjob", "-n", ns)
    assert listed.returncode == 0, listed.stderr


def _explain(cluster, path: str) -> str:
    # The OpenAPI v3 document of a new CRD is published asynchronously; retry briefly.
    deadline = time.monotonic() + 60
    while True:
        out = cluster.kubectl("explain", path)
        if out.returncode == 0 or time.monotonic() > deadline:
            return out.stdout + out.stderr
        time.sleep(1)


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("pbudget.spec.epsilon", "epsilon is the total ε the dataset's records may lose"),
        ("pbudget.spec.composition", "composition is how charges compose"),
        ("pbudget.status.charges", "charges is the ledger"),
        ("ptj.spec.budgetRef", "budgetRef names the PrivacyBudget, in this namespace, that pays"),
        ("ptj.spec.datasetRef", "datasetRef names the PrivateDataset the job trains on"),
        ("pdata.spec.access.namespaces", "namespaces are the namespaces whose jobs may name"),
        ("ptj.spec.privacy.delta", "delta is the δ of the (ε, δ) guarantee"),
        ("ptj.spec.data.numRecords", "numRecords is the number of records the data set holds"),
        ("ptj.spec.runtime.workers", "workers is the number of data-parallel workers"),
        ("fedjob.spec.secureAggregation", "secureAggregation enables SecAgg+"),
        ("fedjob.status.federation.roundsCompleted", "roundsCompleted counts the rounds done"),
    ],
)
def test_kubectl_explain_shows_the_descriptions(cluster, path, text):
    out = _explain(cluster, path)
    assert text in " ".join(out.split()), out


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_invalid_manifest_is_refused_with_a_message_naming_the_field(cluster, ns, path):
    fragments = re.findall(r"^# expect: (.*)$", path.read_text(), re.M)
    assert fragments, f"{path.name} has no '# expect:' line"
    out = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", str(path))
    assert out.returncode != 0, f"{path.name} was accepted:\n{out.stdout}"
    for fragment in fragments:
        assert fragment in out.stderr, f"{fragment!r} not in:\n{out.stderr}"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.relative_to(REPO).as_posix() for p in EXAMPLES])
def test_examples_are_accepted(cluster, ns, path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    if not any(d.get("kind") == "Namespace" for d in docs):
        out = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", str(path))
        assert out.returncode == 0, out.stderr
        return
    # A party's file of a multi-party example declares its Namespace and puts every object in
    # it (tests/unit/api/test_api_examples.py checks that): the API server judges each object
    # in this test's namespace instead (a dry run cannot create the party's namespace first).
    objects = []
    for doc in docs:
        if doc.get("kind") == "Namespace":
            continue
        doc.get("metadata", {}).pop("namespace", None)
        objects.append(doc)
    listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    out = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", "-", input=listed)
    assert out.returncode == 0, out.stderr


def _inert(obj: dict) -> dict:
    """Make a job that no operator on this cluster will run: suspended, on no real budget."""
    obj["spec"]["suspend"] = True
    if "budgetRef" in obj["spec"]:
        obj["spec"]["budgetRef"] = {"name": "no-such-budget"}
    return obj


@pytest.fixture(scope="module")
def created(cluster, ns) -> dict[str, str]:
    """Create one object of each kind for the update tests; return kind -> name."""

    from ppml_testing.manifests import budget, fedjob, ptj

    objs = {
        "privacybudget": budget("immutability"),
        "privatetrainingjob": _inert(ptj("immutability")),
        "federatedjob": _inert(fedjob("immutability")),
    }
    for obj in objs.values():
        out = cluster.kubectl("create", "-n", ns, "-f", "-", input=dump(obj))
        assert out.returncode == 0, out.stderr
    return {kind: obj["metadata"]["name"] for kind, obj in objs.items()}


def _patch(cluster, ns, kind, name, patch):
    return cluster.kubectl("patch", kind, name, "-n", ns, "--type=merge", "-p", dump(patch))


@pytest.mark.parametrize(
    ("kind", "patch", "fragment"),
    [
        pytest.param(
            "privacybudget",
            {"spec": {"delta": "1e-6"}},
            "spec.delta is immutable",
            id="budget delta",
        ),
        pytest.param(
            "privacybudget",
            {"spec": {"composition": "Basic"}},
            "spec.composition is immutable",
            id="budget composition",
        ),
        pytest.param(
            "privatetrainingjob",
            {"spec": {"privacy": {"noiseMultiplier": "0.5"}}},
            "spec.privacy is immutable",
            id="job noise multiplier",
        ),
        pytest.param(
            "privatetrainingjob",
            {"spec": {"data": {"numRecords": 1000}}},
            "spec.data is immutable",
            id="job record count",
        ),
        pytest.param(
            "privatetrainingjob",
            {"spec": {"training": {"epochs": 30}}},
            "spec.training is immutable",
            id="job epochs",
        ),
        pytest.param(
            "privatetrainingjob",
            {"spec": {"model": {"hiddenUnits": [512]}}},
            "spec.model is immutable",
            id="job model",
        ),
        pytest.param(
            "privatetrainingjob",
            {"spec": {"budgetRef": {"name": "another"}}},
            "spec.budgetRef is immutable",
            id="job budget",
        ),
        pytest.param(
            "privatetrainingjob",
            {"spec": {"runtime": {"workers": 2}}},
            "spec.runtime is immutable",
            id="job workers",
        ),
        pytest.param(
            "privatetrainingjob",
            {"spec": {"checkpoint": {"claimName": "ckpt"}}},
            "spec.checkpoint cannot be added or removed",
            id="job checkpoint added",
        ),
        pytest.param(
            "federatedjob",
            {"spec": {"rounds": 10}},
            "spec.rounds is immutable",
            id="federation rounds",
        ),
        pytest.param(
            "federatedjob",
            {"spec": {"privacy": {"noiseMultiplier": "0.3"}}},
            "spec.privacy is immutable",
            id="federation noise",
        ),
        pytest.param(
            "federatedjob",
            {"spec": {"secureAggregation": {}}},
            "spec.secureAggregation cannot be added or removed",
            id="federation secure aggregation added",
        ),
        pytest.param(
            "federatedjob",
            {"spec": {"tls": {"enabled": False}}},
            "spec.tls is immutable",
            id="federation tls turned off",
        ),
    ],
)
def test_privacy_relevant_fields_are_immutable(cluster, ns, created, kind, patch, fragment):
    out = _patch(cluster, ns, kind, created[kind], patch)
    assert out.returncode != 0, f"the update was accepted: {out.stdout}"
    assert fragment in out.stderr, out.stderr


@pytest.mark.parametrize(
    ("kind", "patch"),
    [
        pytest.param("privacybudget", {"spec": {"epsilon": "4"}}, id="budget epsilon raised"),
        pytest.param("privacybudget", {"spec": {"description": "edited"}}, id="budget description"),
        pytest.param(
            "privatetrainingjob", {"spec": {"activeDeadlineSeconds": 120}}, id="job deadline"
        ),
        pytest.param("privatetrainingjob", {"spec": {"ttlSecondsAfterFinished": 60}}, id="job ttl"),
        pytest.param(
            "federatedjob", {"spec": {"activeDeadlineSeconds": 120}}, id="federation deadline"
        ),
    ],
)
def test_operational_fields_can_change(cluster, ns, created, kind, patch):
    out = _patch(cluster, ns, kind, created[kind], patch)
    assert out.returncode == 0, out.stderr


def test_the_server_applies_the_defaults(cluster, ns, created):
    got = cluster.kubectl(
        "get",
        "privatetrainingjob",
        created["privatetrainingjob"],
        "-n",
        ns,
        "-o",
        "json",
        check=True,
    )
    spec = json.loads(got.stdout)["spec"]
    assert spec["privacy"]["accountant"] == "RDP"
    assert spec["privacy"]["maxGradNorm"] == "1.0"
    assert spec["runtime"] == {"workers": 1}
    assert spec["data"]["testFraction"] == "0.2"
    fed = json.loads(
        cluster.kubectl(
            "get", "federatedjob", created["federatedjob"], "-n", ns, "-o", "json", check=True
        ).stdout
    )["spec"]
    assert fed["tls"] == {"enabled": True} and fed["authentication"] == {"enabled": True}
    assert fed["strategy"]["name"] == "FedAvg"


def test_status_is_only_written_through_the_subresource(cluster, ns, created):
    name = created["privacybudget"]
    status = {"status": {"spentEpsilon": "9", "observedGeneration": 1}}
    _patch(cluster, ns, "privacybudget", name, status)
    got = json.loads(
        cluster.kubectl("get", "privacybudget", name, "-n", ns, "-o", "json", check=True).stdout
    )
    assert got.get("status", {}).get("spentEpsilon") != "9"
    sub = cluster.kubectl(
        "patch",
        "privacybudget",
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        dump({"status": {"bogusField": 1}}),
    )
    assert sub.returncode == 0, sub.stderr
    got = json.loads(
        cluster.kubectl("get", "privacybudget", name, "-n", ns, "-o", "json", check=True).stdout
    )
    assert "bogusField" not in got.get("status", {}), "unknown status fields are pruned"


def test_printer_columns(cluster, ns, created):
    out = cluster.kubectl("get", "pbudget,ptj,fedjob", "-n", ns, check=True).stdout
    header_lines = [line.split() for line in out.splitlines() if line.startswith("NAME")]
    assert [
        "NAME",
        "EPSILON",
        "DELTA",
        "SPENT",
        "RESERVED",
        "REMAINING",
        "COMPOSITION",
        "AGE",
    ] in header_lines
    ptj_columns = ["NAME", "DATASET", "BUDGET", "EPSILON", "ADMITTED", "COMPLETE", "STEP", "AGE"]
    assert ptj_columns in header_lines
    assert [
        "NAME",
        "BUDGET",
        "PRIVACY",
        "ROUNDS",
        "DONE",
        "ADMITTED",
        "COMPLETE",
        "AGE",
    ] in header_lines


BOUNDARY_VALUES = [
    *[
        ("privacy.noiseMultiplier", v)
        for v in (
            "0",
            "0.0",
            "1e-400",
            "1e-300",
            "1",
            "1000",
            "1e3",
            "1000.0000000000001",
            "1000.00000000000001",
            "1e400",
            "01",
            ".5",
            "5.",
            "1e",
            "0.5e-3",
            "9E2",
        )
    ],
    *[
        ("privacy.delta", v)
        for v in ("1e-5", "5.56e-4", "5.565e-4", "0.99999999999999999", "1e-320")
    ],
    *[("data.testFraction", v) for v in ("0", "0.8999", "0.89999999999999999", "0.9")],
    *[("training.learningRate", v) for v in ("100", "100.00000000000001", "1e-12")],
    # Whole numbers may be unquoted (issue 13); numbers with a fraction may not.
    *[
        ("privacy.noiseMultiplier", v)
        for v in (0, 1, 1000, 1001, -1, 0.5, 2.0, 1.1, 1.000000001, 1.0001, 1000.0000000001)
    ],
    *[("privacy.delta", v) for v in (0, 1)],
    *[("training.learningRate", v) for v in (100, 101)],
]


def _id(field: str, value: object) -> str:
    kind = "" if isinstance(value, str) else f"{type(value).__name__} "
    return f"{field}={kind}{value}"


@pytest.mark.parametrize(
    ("field", "value"), BOUNDARY_VALUES, ids=[_id(f, v) for f, v in BOUNDARY_VALUES]
)
def test_the_models_and_the_api_server_agree_at_the_boundaries(cluster, ns, field, value):
    """The models mirror the CRD: for each value both accept or both refuse."""

    from pydantic import ValidationError

    from ppml_operator.api.v1alpha1 import PrivateTrainingJob
    from ppml_testing.manifests import edit, ptj

    obj = edit(
        ptj(f"boundary-{secrets.token_hex(3)}"), **{"spec__" + field.replace(".", "__"): value}
    )
    try:
        PrivateTrainingJob.model_validate(obj)
        model_accepts = True
    except ValidationError:
        model_accepts = False
    out = cluster.kubectl("create", "--dry-run=server", "-n", ns, "-f", "-", input=dump(obj))
    assert (out.returncode == 0) == model_accepts, (
        f"{field}={value}: the model {'accepts' if model_accepts else 'refuses'}, "
        f"the API server says: {out.stdout}{out.stderr}"
    )


@pytest.mark.parametrize(
    "server_side", [False, True], ids=["client-side apply", "server-side apply"]
)
def test_reapplying_the_same_manifest_passes_the_immutability_rules(cluster, ns, server_side):
    """GitOps re-syncs apply the same manifest again: defaults must not look like a change."""

    from ppml_testing.manifests import fedjob, ptj

    mode = ["--server-side"] if server_side else []
    suffix = "ssa" if server_side else "csa"
    for obj in (_inert(ptj(f"reapply-{suffix}")), _inert(fedjob(f"reapply-{suffix}"))):
        for attempt in range(2):
            out = cluster.kubectl("apply", *mode, "-n", ns, "-f", "-", input=dump(obj))
            assert out.returncode == 0, f"apply #{attempt + 1}: {out.stderr}"


UNQUOTED_BUDGET = """\
apiVersion: ppml.dev/v1alpha1
kind: PrivacyBudget
metadata:
  name: {name}
spec:
  epsilon: {epsilon}
  delta: {delta}
"""


@pytest.mark.parametrize(
    ("epsilon", "delta", "refused"),
    [
        pytest.param("3", '"1e-5"', None, id="epsilon: 3 is accepted"),
        pytest.param("'3'", "'1e-5'", None, id="quoted forms still are"),
        pytest.param("0.5", '"1e-5"', "spec.epsilon", id="epsilon: 0.5 is a float"),
        pytest.param("3", "1e-5", "spec.delta", id="delta: 1e-5 is a float to kubectl"),
    ],
)
def test_what_people_write_unquoted_as_kubectl_reads_it(cluster, ns, epsilon, delta, refused):
    """Issue 13: whole numbers pass unquoted; floats are refused before our rules run.

    The YAML goes through kubectl's own parser (PyYAML would read 1e-5 as a string).
    """
    name = f"unquoted-{secrets.token_hex(3)}"
    text = UNQUOTED_BUDGET.format(name=name, epsilon=epsilon, delta=delta)
    out = cluster.kubectl("apply", "-n", ns, "-f", "-", input=text)
    if refused is None:
        assert out.returncode == 0, out.stderr
        got = json.loads(
            cluster.kubectl("get", "pbudget", name, "-n", ns, "-o", "json", check=True).stdout
        )
        from ppml_operator.api.v1alpha1 import PrivacyBudget

        assert PrivacyBudget.model_validate(got).spec.epsilon == "3"
    else:
        assert out.returncode != 0, out.stdout
        assert f"{refused} in body must be of type integer,string" in out.stderr, out.stderr


@pytest.mark.parametrize(
    ("delta", "accepted"),
    [
        pytest.param(None, True, id="the ledger's form of 1e-31"),
        pytest.param("0.0000000000000000000000000000001", False, id="the 33-character form"),
    ],
)
def test_the_ledger_writes_a_tiny_delta_the_api_server_stores(
    cluster, ns, created, delta, accepted
):
    """Issue 13: a charge's delta of 1e-31 was written in 33 characters and got a 422 forever."""
    from decimal import Decimal

    from ppml_operator.privacy import DpSgdEvent
    from ppml_operator.reconcile import ledger

    budget = json.loads(
        cluster.kubectl(
            "get", "pbudget", created["privacybudget"], "-n", ns, "-o", "json", check=True
        ).stdout
    )
    events = ledger.canonical_events([DpSgdEvent(Decimal("1.1"), Decimal("0.04"), 25)])
    request = ledger.ChargeRequest(
        f"uid-{secrets.token_hex(3)}", "PrivateTrainingJob", "tiny-delta", ns, events, "2.5",
        delta="1e-31",
    )
    budget["spec"]["epsilon"] = "1000"  # room for the charge; only the status is written
    out = ledger.reserve(budget, request, now="2026-12-01T10:00:00Z")
    assert out.status is not None, out.message
    [entry] = [c for c in out.status["charges"] if c["jobUID"] == request.job_uid]
    assert Decimal(entry["delta"]) == Decimal("1e-31")
    if delta is not None:
        entry["delta"] = delta
    patched = cluster.kubectl(
        "patch", "pbudget", created["privacybudget"], "-n", ns, "--subresource=status",
        "--type=merge", "-p", dump({"status": {"charges": out.status["charges"]}}),
    )
    assert (patched.returncode == 0) == accepted, patched.stderr
    if not accepted:
        assert "Too long" in patched.stderr
