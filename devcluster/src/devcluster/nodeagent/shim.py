"""The first process of every container: set up its mounts and identity, then exec the command.

Run as root by the node agent inside ``ip netns exec <pod netns>``, which already gave it a private
mount namespace (propagation slave, so nothing here reaches the host's mount table). It reads a
JSON spec, bind-mounts volumes, ``/etc/hosts``, ``/etc/resolv.conf``, ``/tmp`` and the termination
message file, drops to the pod's user and execs. It imports only the standard library and is run
with ``python -I -S`` so it starts in a few milliseconds.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

MS_RDONLY = 1
MS_NOSUID = 2
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWUTS = 0x04000000

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(src: str | None, dst: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    rc = _libc.mount(
        src.encode() if src else None, dst.encode(), fstype.encode() if fstype else None,
        ctypes.c_ulong(flags), data.encode() if data else None,
    )
    if rc:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} on {dst}: {os.strerror(err)}")


def _ensure_target(dst: str, is_file: bool) -> None:
    if os.path.lexists(dst):
        return
    os.makedirs(os.path.dirname(dst) or "/", exist_ok=True)
    if is_file:
        with open(dst, "a"):
            pass
    else:
        os.makedirs(dst, exist_ok=True)


def bind(src: str | int, dst: str, read_only: bool = False) -> None:
    """Bind-mount ``src`` (a path or an O_PATH fd) at ``dst``, creating ``dst`` if needed."""
    if isinstance(src, int):
        src = f"/proc/self/fd/{src}"
    _ensure_target(dst, not os.path.isdir(src))
    _mount(src, dst, None, MS_BIND | MS_REC)
    if read_only:
        _mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC)


def expose_root_entries(entries: list[str], stage: str) -> None:
    """Make selected entries of a mode-0700 ``/root`` reachable by a non-root user.

    The host's ``/root`` is moved aside (bind-mounted at ``stage``), a tmpfs with mode 0755 covers
    ``/root`` in this mount namespace only, and each entry is bind-mounted back from ``stage``.
    """
    os.makedirs(stage, exist_ok=True)
    _mount("/root", stage, None, MS_BIND | MS_REC)
    _mount("tmpfs", "/root", "tmpfs", MS_NOSUID, "mode=0755,size=1m")
    for name in entries:
        src = os.path.join(stage, name)
        if os.path.isdir(src):
            os.makedirs(os.path.join("/root", name), exist_ok=True)
            _mount(src, os.path.join("/root", name), None, MS_BIND | MS_REC)


def main() -> None:
    """Read the spec named by argv[1], prepare the container, exec its command."""
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    try:
        if spec.get("hostname"):
            name = spec["hostname"].encode()
            if _libc.unshare(CLONE_NEWUTS) or _libc.sethostname(name, len(name)):
                err = ctypes.get_errno()
                raise OSError(err, f"set hostname: {os.strerror(err)}")
        if spec.get("exposeRoot"):
            expose_root_entries(spec["exposeRoot"], spec["rootStage"])
        # Open every source first: an earlier mount (e.g. /tmp) may cover a later source.
        fds = [os.open(m["src"], os.O_PATH) for m in spec["mounts"]]
        for m, fd in zip(spec["mounts"], fds, strict=True):
            bind(fd, m["dst"], m.get("readOnly", False))
        for fd in fds:
            os.close(fd)
        cwd = spec.get("workingDir") or "/"
        os.makedirs(cwd, exist_ok=True)
        if spec.get("noNewPrivs"):
            _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        uid, gid = spec.get("uid"), spec.get("gid")
        if gid is not None or uid is not None:
            os.setgroups(spec.get("groups", []))
            os.setgid(gid if gid is not None else 0)
        if uid is not None:
            os.setuid(uid)
        os.chdir(cwd)
    except OSError as err:
        print(f"devcluster: container setup failed: {err}", file=sys.stderr, flush=True)
        os._exit(128)
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as err:
        print(f"devcluster: exec {argv[0]!r} failed: {err}", file=sys.stderr, flush=True)
        os._exit(127)


if __name__ == "__main__":
    main()
