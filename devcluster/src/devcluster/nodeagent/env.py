"""Container environment: values, downward API, configMap and secret references, ``$(VAR)``."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import Any

from devcluster.kubeapi import ApiError

_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


class ConfigError(Exception):
    """A container's configuration refers to something missing (CreateContainerConfigError)."""


def expand(value: str, env: Mapping[str, str]) -> str:
    """Expand ``$(NAME)`` from ``env`` the way the kubelet does (``$$`` escapes, unknowns stay)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, value)


def field_ref(pod: dict[str, Any], path: str) -> str:
    """Return the downward-API value of ``path`` (``metadata.name``, ``status.podIP``, ...).

    Raises
    ------
    ConfigError
        For a field path the agent does not support.

    """
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str(meta.get(m.group(1), {}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = sorted(meta.get(path.split(".")[1], {}).items())
        return "\n".join(f'{k}="{v}"' for k, v in items)
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": status.get("podIP", ""),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs", [])),
        "status.hostIP": status.get("hostIP", ""),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs", [])),
    }
    if path not in simple:
        raise ConfigError(f"fieldRef {path!r} is not supported by devcluster")
    return str(simple[path])


_CPU = {"m": 0.001, "": 1.0}
_MEM = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9,
        "T": 1e12, "k": 1e3, "": 1.0}


def parse_quantity(q: str) -> float:
    """Parse a Kubernetes quantity (``500m``, ``1Gi``, ``2``) into a float of base units."""
    m = re.fullmatch(r"([0-9.eE+-]+)([A-Za-z]*)", str(q).strip())
    if not m:
        raise ConfigError(f"quantity {q!r} is not understood")
    num, suffix = float(m.group(1)), m.group(2)
    scale = {**_MEM, **_CPU}.get(suffix)
    if scale is None:
        raise ConfigError(f"quantity {q!r} is not understood")
    return num * scale


def resource_ref(
    container: dict[str, Any], ref: dict[str, Any], node_alloc: Mapping[str, str]
) -> str:
    """Return ``resourceFieldRef`` (``limits.cpu``, ``requests.memory``) as the kubelet does."""
    kind, _, res = ref["resource"].partition(".")
    resources = container.get("resources", {})
    val = resources.get(kind, {}).get(res)
    if val is None and kind == "limits":
        val = node_alloc.get(res, "0")
    if val is None:
        val = "0"
    divisor = parse_quantity(ref.get("divisor", "1"))
    out = parse_quantity(val) / divisor
    return str(int(-(-out // 1)))  # ceiling, like the kubelet


Getter = Callable[[str, str], dict[str, Any] | None]


def _source_data(get: Getter, kind: str, ns: str, name: str) -> dict[str, str] | None:
    obj = get(kind, name)
    if obj is None:
        return None
    if kind == "secrets":
        return {k: base64.b64decode(v).decode(errors="replace")
                for k, v in (obj.get("data") or {}).items()}
    return dict(obj.get("data") or {})


def build_env(
    pod: dict[str, Any],
    container: dict[str, Any],
    base: Mapping[str, str],
    get: Getter,
    node_alloc: Mapping[str, str],
) -> dict[str, str]:
    """Return the container's environment: ``base``, then ``envFrom``, then ``env``.

    Parameters
    ----------
    pod, container
        The pod and one of its containers, as dicts.
    base
        Variables every container gets (PATH, HOSTNAME, KUBERNETES_SERVICE_HOST, ...).
    get
        ``get(kind, name)`` returning a configMap or secret of the pod's namespace, or None.
    node_alloc
        The node's allocatable resources (for limits that are not set).

    Raises
    ------
    ConfigError
        When a non-optional reference cannot be resolved.

    """
    ns = pod["metadata"]["namespace"]
    env = dict(base)
    for src in container.get("envFrom", []):
        prefix = src.get("prefix", "")
        for kind, key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            if key in src:
                ref = src[key]
                data = _source_data(get, kind, ns, ref["name"])
                if data is None:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f"{kind[:-1]} {ns}/{ref['name']} not found")
                env.update({prefix + k: v for k, v in data.items()})
    for var in container.get("env", []):
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        vf = var["valueFrom"]
        if "fieldRef" in vf:
            env[name] = field_ref(pod, vf["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in vf:
            env[name] = resource_ref(container, vf["resourceFieldRef"], node_alloc)
        else:
            kind, key = (
                ("configmaps", "configMapKeyRef") if "configMapKeyRef" in vf
                else ("secrets", "secretKeyRef")
            )
            ref = vf[key]
            data = _source_data(get, kind, ns, ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError(f"{key} {ns}/{ref['name']} key {ref['key']!r} not found")
            env[name] = data[ref["key"]]
    return env


def getter(client: Any, ns: str) -> Getter:
    """Return a :data:`Getter` reading configMaps and secrets of ``ns`` through ``client``."""

    def get(kind: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = client.get(f"/api/v1/namespaces/{ns}/{kind}/{name}")
            return obj
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    return get
