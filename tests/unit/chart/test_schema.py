"""values.schema.json refuses values that would break the install or loosen its security."""

from __future__ import annotations

import json

import pytest

from .conftest import CHART, HelmError

BAD_VALUES = {
    "writable root filesystem": (
        "securityContext.readOnlyRootFilesystem=false",
        "readOnlyRootFilesystem",
    ),
    "privilege escalation": (
        "securityContext.allowPrivilegeEscalation=true",
        "allowPrivilegeEscalation",
    ),
    "running as root allowed": ("podSecurityContext.runAsNonRoot=false", "runAsNonRoot"),
    "a namespace that is no DNS label": ("operator.watchNamespaces={Team_A}", "watchNamespaces"),
    "metrics on port 0": ("metrics.port=0", "port"),
    "probe port out of range": ("probes.port=70000", "port"),
    "an unknown pull policy": ("image.pullPolicy=Sometimes", "pullPolicy"),
    "an unknown log level": ("operator.logLevel=chatty", "logLevel"),
    "a reconcile interval of zero": (
        "operator.reconcileIntervalSeconds=0",
        "reconcileIntervalSeconds",
    ),
    "a misspelt top-level key": ("replicaCount=2", "replicaCount"),
    "a misspelt nested key": ("crds.enable=true", "enable"),
    "a digest that is no sha256": ("image.digest=latest", "digest"),
    "an empty image repository": ("image.repository=", "repository"),
    "added capabilities": ("securityContext.capabilities.add={NET_ADMIN}", "add"),
}


@pytest.mark.parametrize(("set_arg", "field"), list(BAD_VALUES.values()), ids=list(BAD_VALUES))
def test_bad_values_are_refused_naming_the_field(render, set_arg, field):
    with pytest.raises(HelmError) as err:
        render(set_arg)
    assert "schema" in str(err.value).lower()
    assert field in str(err.value)


GOOD_VALUES = {
    "watch two namespaces": ("operator.watchNamespaces={team-a,team-b}",),
    "debug logging": ("operator.logLevel=debug",),
    "no CRDs, no metrics": ("crds.enabled=false", "metrics.enabled=false"),
    "a ServiceMonitor": (
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.interval=1m",
    ),
    "an existing service account": ("serviceAccount.create=false", "serviceAccount.name=ops"),
}


@pytest.mark.parametrize("set_args", list(GOOD_VALUES.values()), ids=list(GOOD_VALUES))
def test_good_values_are_accepted(render, set_args):
    assert render(*set_args).of_kind("Deployment")


def test_the_service_account_name_is_required_when_not_created(render):
    with pytest.raises(HelmError, match=r"serviceAccount\.name is required"):
        render("serviceAccount.create=false")


def test_the_schema_describes_every_default_value():
    import yaml

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])
    assert schema["additionalProperties"] is False


# Maps documented as one row (their members are Kubernetes' own fields).
WHOLE = {
    "podSecurityContext",
    "securityContext",
    "resources",
    "grafanaDashboard.labels",
    "argocdHealthChecks",
}


def value_keys(d, prefix=""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and key not in WHOLE:
            yield from value_keys(v, key + ".")
        else:
            yield key


def test_the_chart_readme_documents_every_value():
    import yaml

    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [k for k in value_keys(values) if f"| `{k}` |" not in readme]
    assert not missing, missing
