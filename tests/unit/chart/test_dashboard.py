"""The Grafana dashboard queries only metrics the operator and the runtime really export."""

from __future__ import annotations

import json
import re

from ppml_operator import metrics
from ppml_runtime import contract

from .conftest import CHART

DASHBOARD = json.loads((CHART / "files" / "dashboards" / "ppml-operator.json").read_text())
PROMQL_WORDS = {
    "sum",
    "by",
    "rate",
    "max",
    "histogram_quantile",
    "le",
    "kind",
    "namespace",
    "budget",
    "state",
    "pod",
    "condition",
    "reason",
    "error",
    "operation",
    "result",
    "label_values",
}


SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def exported_samples() -> set[str]:
    """Sample names the operator's registry exposes, read from its declared families.

    Read without recording anything, so the registry other tests look at is left untouched.
    """
    names = set()
    for family in metrics.REGISTRY.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def queried_metrics() -> set[str]:
    names: set[str] = set()
    exprs = [t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in DASHBOARD["templating"]["list"] if "definition" in v]
    for expr in exprs:
        no_strings = re.sub(r'"[^"]*"', "", expr)
        no_ranges = re.sub(r"\[[^\]]*\]", "", no_strings)
        for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", no_ranges):
            if word not in PROMQL_WORDS and word.startswith("ppml_"):
                names.add(word)
    return names


def test_the_dashboard_has_panels_for_every_signal_the_issue_asks_for():
    titles = " ".join(p["title"].lower() for p in DASHBOARD["panels"])
    for word in ("epsilon", "jobs by condition", "admissions", "latency", "errors", "progress"):
        assert word in titles


def test_every_queried_metric_is_exported():
    runtime = {getattr(contract, n) for n in dir(contract) if n.startswith("METRIC_")}
    exported = exported_samples() | runtime
    queried = queried_metrics()
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, sorted(queried - exported)
