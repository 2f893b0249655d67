"""Materialise a pod's volumes as host directories the shim bind-mounts into containers.

configMap, secret, downwardAPI and projected volumes are written once when the pod starts (later
changes to their sources are not propagated); emptyDir is a fresh directory; a
persistentVolumeClaim is the host directory ``.devcluster/pv/<ns>/<claim>``; hostPath is the path.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from devcluster.kubeapi import ApiError, Client
from devcluster.nodeagent.env import ConfigError, Getter, field_ref


def _write(root: Path, rel: str, data: bytes, mode: int) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    p.chmod(mode)


def _keyed(
    root: Path, obj: dict[str, Any] | None, src: dict[str, Any], what: str, secret: bool,
    default_mode: int,
) -> None:
    if obj is None:
        if src.get("optional"):
            return
        raise ConfigError(f"{what} not found")
    data: dict[str, bytes] = {}
    for k, v in (obj.get("data") or {}).items():
        data[k] = base64.b64decode(v) if secret else v.encode()
    for k, v in (obj.get("binaryData") or {}).items():
        data[k] = base64.b64decode(v)
    items = src.get("items")
    if items:
        for it in items:
            if it["key"] not in data:
                if src.get("optional"):
                    continue
                raise ConfigError(f"{what} has no key {it['key']!r}")
            _write(root, it["path"], data[it["key"]], it.get("mode", default_mode))
    else:
        for k, v in data.items():
            _write(root, k, v, default_mode)


def _downward(root: Path, pod: dict[str, Any], items: list[dict[str, Any]], mode: int) -> None:
    for it in items:
        if "fieldRef" in it:
            val = field_ref(pod, it["fieldRef"]["fieldPath"])
        else:
            raise ConfigError("downwardAPI resourceFieldRef items are not supported by devcluster")
        _write(root, it["path"], val.encode(), it.get("mode", mode))


def _token(client: Client, pod: dict[str, Any], src: dict[str, Any], audiences: list[str]) -> str:
    meta = pod["metadata"]
    sa = pod["spec"].get("serviceAccountName") or "default"
    body: dict[str, Any] = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": [src["audience"]] if src.get("audience") else audiences,
            "expirationSeconds": src.get("expirationSeconds", 3607),
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"],
                               "uid": meta["uid"]},
        },
    }
    out = client.post(f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token", body)
    return str(out["status"]["token"])


def prepare(
    client: Client,
    pod: dict[str, Any],
    pod_dir: Path,
    pv_root: Path,
    get: Getter,
    audiences: list[str],
) -> dict[str, Path]:
    """Create every volume of ``pod`` and return volume name -> host path.

    Raises
    ------
    ConfigError
        When a non-optional source is missing or a volume type is unsupported.
    ApiError
        When the API server refuses a TokenRequest.

    """
    ns = pod["metadata"]["namespace"]
    out: dict[str, Path] = {}
    psc = pod["spec"].get("securityContext", {})
    fs_group = psc.get("fsGroup")
    for vol in pod["spec"].get("volumes", []):
        name = vol["name"]
        root = pod_dir / "volumes" / name
        if "hostPath" in vol:
            hp = Path(vol["hostPath"]["path"])
            if vol["hostPath"].get("type") in ("DirectoryOrCreate",) or not hp.exists():
                if vol["hostPath"].get("type") == "FileOrCreate":
                    hp.parent.mkdir(parents=True, exist_ok=True)
                    hp.touch()
                else:
                    hp.mkdir(parents=True, exist_ok=True)
            out[name] = hp
            continue
        if "persistentVolumeClaim" in vol:
            hp = pv_root / ns / vol["persistentVolumeClaim"]["claimName"]
            if not hp.exists():
                hp.mkdir(parents=True)
                hp.chmod(0o777)
            out[name] = hp
            continue
        root.mkdir(parents=True, exist_ok=True)
        out[name] = root
        if "emptyDir" in vol:
            root.chmod(0o777)
        elif "configMap" in vol:
            src = vol["configMap"]
            _keyed(root, get("configmaps", src["name"]), src, f"configmap {ns}/{src['name']}",
                   False, src.get("defaultMode", 0o644))
        elif "secret" in vol:
            src = vol["secret"]
            _keyed(root, get("secrets", src["secretName"]), src,
                   f"secret {ns}/{src['secretName']}", True, src.get("defaultMode", 0o644))
        elif "downwardAPI" in vol:
            src = vol["downwardAPI"]
            _downward(root, pod, src.get("items", []), src.get("defaultMode", 0o644))
        elif "projected" in vol:
            mode = vol["projected"].get("defaultMode", 0o644)
            for s in vol["projected"].get("sources", []):
                if "serviceAccountToken" in s:
                    st = s["serviceAccountToken"]
                    _write(root, st["path"], _token(client, pod, st, audiences).encode(), mode)
                elif "configMap" in s:
                    c = s["configMap"]
                    _keyed(root, get("configmaps", c["name"]), c, f"configmap {ns}/{c['name']}",
                           False, mode)
                elif "secret" in s:
                    c = s["secret"]
                    _keyed(root, get("secrets", c["name"]), c, f"secret {ns}/{c['name']}",
                           True, mode)
                elif "downwardAPI" in s:
                    _downward(root, pod, s["downwardAPI"].get("items", []), mode)
                else:
                    raise ConfigError(f"projected source {sorted(s)} is not supported")
        else:
            kinds = sorted(set(vol) - {"name"})
            raise ConfigError(f"volume {name!r} of type {kinds} is not supported by devcluster")
        if fs_group is not None:
            for dirpath, _dirs, files in os.walk(root):
                os.chown(dirpath, -1, fs_group)
                for f in files:
                    os.chown(os.path.join(dirpath, f), -1, fs_group)
    return out


def mounts_for(
    container: dict[str, Any], volumes: dict[str, Path]
) -> list[dict[str, Any]]:
    """Return the shim mount list (``src``, ``dst``, ``readOnly``) of one container.

    Raises
    ------
    ConfigError
        When a volumeMount names an unknown volume.

    """
    out = []
    for vm in container.get("volumeMounts", []):
        if vm["name"] not in volumes:
            raise ConfigError(f"volumeMount {vm['mountPath']} names unknown volume {vm['name']!r}")
        src = volumes[vm["name"]]
        if vm.get("subPath"):
            src = src / vm["subPath"]
            if not src.exists():
                src.mkdir(parents=True)
        out.append({"src": str(src), "dst": vm["mountPath"], "readOnly": bool(vm.get("readOnly"))})
    return sorted(out, key=lambda m: m["dst"].count("/"))


__all__ = ["ApiError", "mounts_for", "prepare"]
