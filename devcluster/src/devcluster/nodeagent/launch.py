"""Start a container: its identity, environment, GPUs, mounts, and the shim process."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from devcluster.nodeagent import volumes
from devcluster.nodeagent.container import Container, now_iso
from devcluster.nodeagent.env import ConfigError, build_env, expand, getter
from devcluster.nodeagent.podbase import PodBase
from devcluster.paths import APISERVER_PORT, BRIDGE_IP, REPO_ROOT

log = logging.getLogger("devcluster.nodeagent")

SHIM = Path(__file__).with_name("shim.py")
#: The user a container runs as when it asks for runAsNonRoot without a runAsUser.
DEFAULT_NONROOT_UID = 65532
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Entrypoints (ENTRYPOINT, CMD) of the project's own images, used when a container sets no
#: ``command``: the agent ignores images, so it cannot read them from an image.
IMAGE_ENTRYPOINTS: dict[str, tuple[list[str], list[str]]] = {
    "ppml-runtime": (["python", "-m", "ppml_runtime"], []),
    "ppml-operator": (
        ["python", "-m", "ppml_operator"],
        ["--standalone", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"],
    ),
}


def image_entrypoint(image: str) -> tuple[list[str], list[str]] | None:
    """Return ``(entrypoint, cmd)`` of a known project image (any registry or tag), else None."""
    repo = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    return IMAGE_ENTRYPOINTS.get(repo)


class Launcher(PodBase):
    """Start containers of the pod as local processes."""

    def _identity(self, c: Container) -> tuple[int | None, int | None, list[int], bool]:
        psc = self.pod["spec"].get("securityContext") or {}
        csc = c.spec.get("securityContext") or {}
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        gid = csc.get("runAsGroup", psc.get("runAsGroup"))
        nonroot = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if uid is None and nonroot:
            uid = DEFAULT_NONROOT_UID
        if uid == 0 and nonroot:
            raise ConfigError("container has runAsNonRoot and runAsUser 0")
        if uid is not None and gid is None:
            gid = uid if uid else 0
        groups = list(psc.get("supplementalGroups", []))
        if psc.get("fsGroup") is not None:
            groups.append(psc["fsGroup"])
        nnp = csc.get("allowPrivilegeEscalation") is False
        return uid, gid, groups, nnp

    def _identity_files(self, uid: int | None, gid: int | None) -> list[dict[str, Any]]:
        """Return mounts of /etc/passwd and /etc/group that know ``uid`` and ``gid``.

        An image made for a fixed non-root user has it in its /etc/passwd; the host may not,
        and ``getpass.getuser()`` (used by several libraries) fails for an unknown uid.
        """
        if uid is None:
            return []
        out = []
        for name, ident, line in (
            ("passwd", uid, f"u{uid}:x:{uid}:{gid if gid is not None else uid}::/tmp:"
                            "/usr/sbin/nologin\n"),
            ("group", gid, f"g{gid}:x:{gid}:\n"),
        ):
            if ident is None:
                continue
            host = Path("/etc") / name
            text = host.read_text() if host.exists() else ""
            if any(ln.split(":")[2:3] == [str(ident)] for ln in text.splitlines()):
                continue
            f = self.dir / name
            f.write_text(text + ("" if text.endswith("\n") or not text else "\n") + line)
            f.chmod(0o644)
            out.append({"src": str(f), "dst": f"/etc/{name}"})
        return out

    def _base_env(self) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)
        return {
            "PATH": f"{venv_bin}:{SYSTEM_PATH}",
            "HOSTNAME": self.pod["spec"].get("hostname") or self.pname,
            "HOME": "/tmp",
            "PYTHONUNBUFFERED": "1",
            # The agent's own PYTHONPATH (a git worktree's sources, ahead of the shared venv's
            # .pth) reaches the pods, so that a worktree's cluster runs that worktree's code.
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}),
            "KUBERNETES_SERVICE_HOST": BRIDGE_IP,
            "KUBERNETES_SERVICE_PORT": str(APISERVER_PORT),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(APISERVER_PORT),
            "KUBERNETES_PORT": f"tcp://{BRIDGE_IP}:{APISERVER_PORT}",
            "KUBERNETES_PORT_443_TCP": f"tcp://{BRIDGE_IP}:{APISERVER_PORT}",
            "KUBERNETES_PORT_443_TCP_ADDR": BRIDGE_IP,
            "KUBERNETES_PORT_443_TCP_PORT": str(APISERVER_PORT),
            "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
        }

    def _gpu_env(self, c: Container) -> dict[str, str]:
        """Return CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES for the container's GPU limit.

        A container sees only the GPUs allocated to it, and none without a request, as with
        the NVIDIA device plugin.
        """
        res = c.spec.get("resources") or {}
        want = (res.get("limits") or {}).get("nvidia.com/gpu") or (
            res.get("requests") or {}).get("nvidia.com/gpu")
        count = int(want or 0)
        if count == 0:
            return {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void"}
        try:
            ids = self.agent.allocate_gpus(self.uid, c.name, count)
        except RuntimeError as err:
            raise ConfigError(str(err)) from err
        visible = ",".join(str(i) for i in ids)
        return {"CUDA_VISIBLE_DEVICES": visible, "NVIDIA_VISIBLE_DEVICES": visible}

    def _start(self, c: Container) -> None:
        env = build_env(self._pod_with_ip(), c.spec, {**self._base_env(), **self._gpu_env(c)},
                        getter(self.agent.client, self.ns), self.agent.allocatable)
        cmd = [expand(a, env) for a in c.spec.get("command", [])]
        args = [expand(a, env) for a in c.spec.get("args", [])]
        if not cmd:
            known = image_entrypoint(c.spec.get("image", ""))
            if known is None:
                raise ConfigError(
                    f"container {c.name} has no command: devcluster ignores images, so it knows "
                    f"no entrypoint for image {c.spec.get('image')!r}"
                )
            cmd = known[0]
            if "args" not in c.spec:
                args = known[1]
        uid, gid, groups, nnp = self._identity(c)
        term = self._term_file(c)
        term.parent.mkdir(parents=True, exist_ok=True)
        term.write_bytes(b"")
        term.chmod(0o666)
        if uid is not None:
            os.chown(term, uid, gid if gid is not None else -1)
        mounts = volumes.mounts_for(c.spec, self.volumes)
        mounts += [
            {"src": str(self.dir / "tmp"), "dst": "/tmp"},
            {"src": str(self.dir / "hosts"), "dst": "/etc/hosts"},
            {"src": str(self.dir / "resolv.conf"), "dst": "/etc/resolv.conf"},
            {"src": str(term), "dst": c.spec.get("terminationMessagePath", "/dev/termination-log")},
        ]
        mounts += self._identity_files(uid, gid)
        mounts += _host_code_under_tmp()
        mounts.sort(key=lambda m: m["dst"].rstrip("/").count("/"))
        spec = {
            "argv": cmd + args, "env": env, "mounts": mounts,
            "workingDir": c.spec.get("workingDir"),
            "uid": uid, "gid": gid, "groups": groups, "noNewPrivs": nnp,
            "hostname": (self.pod["spec"].get("hostname") or self.pname)[:63],
        }
        if uid not in (None, 0):
            spec["exposeRoot"] = self.agent.root_entries
            spec["rootStage"] = str(self.dir / "rootstage")
            for name in self.volumes:
                vdir = self.dir / "volumes" / name
                if vdir.is_dir() and any(v.get("emptyDir") is not None and v["name"] == name
                                         for v in self.pod["spec"].get("volumes", [])):
                    os.chown(vdir, uid, gid if gid is not None else -1)
        specfile = self.dir / "spec" / f"{c.name}.json"
        specfile.parent.mkdir(parents=True, exist_ok=True)
        specfile.write_text(json.dumps(spec))
        specfile.chmod(0o600)
        logf = self._log_file(c)
        with open(logf, "ab") as out:
            # `ip netns exec` enters the pod's network namespace and a private mount namespace
            # (propagation slave); a hostNetwork pod only gets the mount namespace.
            enter = self._enter()
            c.proc = subprocess.Popen(
                [*enter, sys.executable, "-I", "-S", str(SHIM), str(specfile)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (self.agent.paths.run / "pods").mkdir(parents=True, exist_ok=True)
        pidfile = self.agent.paths.run / "pods" / f"{self.uid}_{c.name}.pid"
        with contextlib.suppress(OSError):
            st = Path(f"/proc/{c.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
            pidfile.write_text(f"{c.proc.pid} {st}\n")
        c.started_at = now_iso()
        c.state = {"running": {"startedAt": c.started_at}}
        c.exit_code = None
        c.next_probe = time.monotonic() + float(
            (c.spec.get("readinessProbe") or {}).get("initialDelaySeconds", 0))
        c.ready = "readinessProbe" not in c.spec
        c.live_failures = 0
        c.next_live = time.monotonic() + float(
            (c.spec.get("livenessProbe") or {}).get("initialDelaySeconds", 0))
        proc = c.proc
        threading.Thread(target=self._reap_waiter, args=(proc,), daemon=True).start()
        log.info("Started container %s/%s/%s (pid %d)", self.ns, self.pname, c.name, proc.pid)
        if c.restart_count == 0:
            self.agent.event(self.pod, "Normal", "Started", f"Started container {c.name}")

    def _reap_waiter(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        self._wake()


def _host_code_under_tmp() -> list[dict[str, str]]:
    """Bind the repository and the Python environment back in when they live under ``/tmp``.

    Every pod gets a private ``/tmp``; a checkout under ``/tmp`` (CI clones often are) would
    otherwise vanish inside the pod, and with it the venv's ``python`` on PATH and the source
    folders its ``.pth`` names. Mounts sort by depth, so these land on top of the pod's ``/tmp``.
    """
    out: list[dict[str, str]] = []
    for p in sorted({str(REPO_ROOT), sys.prefix, os.path.realpath(sys.prefix)}):
        if p.startswith("/tmp/") and not any(p.startswith(m["dst"] + "/") for m in out):
            out.append({"src": p, "dst": p})
    return out
