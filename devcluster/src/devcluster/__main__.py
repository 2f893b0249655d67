"""``python -m devcluster up | down | status | env | logs [NAME]``."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from devcluster import controlplane
from devcluster.controlplane import COMPONENTS, ClusterError
from devcluster.kubeapi import ApiError, Client
from devcluster.paths import state_paths
from devcluster.tools import ToolsError, bin_dir


def _up(args: argparse.Namespace) -> int:
    paths = state_paths()
    t0 = time.monotonic()
    already = all(controlplane.running(paths).values()) and controlplane.readyz(paths)
    try:
        controlplane.up(paths, fake_gpus=args.fake_gpus, timeout_s=args.timeout,
                        nodes=args.nodes)
    except (ClusterError, ToolsError) as err:
        print(f"devcluster: {err}", file=sys.stderr)
        return 1
    what = "was already up" if already else "is up"
    print(f"devcluster {what} ({time.monotonic() - t0:.1f}s); kubeconfig: {paths.kubeconfig}")
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = controlplane.down(state_paths(), purge=args.purge)
    print(f"devcluster stopped {', '.join(stopped) if stopped else 'nothing (it was not running)'}")
    return 0


def _status(_: argparse.Namespace) -> int:
    paths = state_paths()
    for name, pid in controlplane.running(paths).items():
        print(f"{name:26} {'running, pid ' + str(pid) if pid else 'stopped'}")
    ready = controlplane.readyz(paths)
    print(f"{'/readyz':26} {'ok' if ready else 'not answering'}")
    if ready:
        c = Client.admin(paths, timeout=5)
        for name in controlplane.current_nodes(paths):
            try:
                nr = controlplane.node_ready(c, [name])
            except ApiError:
                nr = False
            print(f"{'node ' + name:26} {'Ready' if nr else 'not Ready'}")
        pods = c.get("/api/v1/pods")["items"]
        print(f"{'pods':26} {len(pods)}")
    return 0 if ready else 3


def _env(_: argparse.Namespace) -> int:
    try:
        bins = bin_dir(build=False)
    except ToolsError:
        bins = bin_dir()
    print(f"export KUBECONFIG={state_paths().kubeconfig} PATH={bins}:$PATH")
    return 0


def _logs(args: argparse.Namespace) -> int:
    paths = state_paths()
    comp = {p.stem: p for p in sorted(paths.logs.glob("*.log"))}
    pods = {p.stem: p for p in sorted(paths.pod_logs.glob("*.log"))}
    if not args.name:
        print("component logs:")
        for name, p in comp.items():
            print(f"  {name:28} {p}")
        print("pod logs (<namespace>_<pod>_<container>):")
        for name, p in pods.items():
            print(f"  {name:40} {p}")
        return 0
    if args.name in comp:
        files = [comp[args.name]]
    else:
        ns, _, pod = args.name.rpartition("/")
        files = [p for stem, p in pods.items()
                 if stem.split("_")[1] == pod and (not ns or stem.split("_")[0] == ns)]
    if not files:
        print(f"devcluster: no log named {args.name!r}", file=sys.stderr)
        return 1
    for p in files:
        if len(files) > 1:
            print(f"==> {p.name} <==")
        lines = p.read_text(errors="replace").splitlines()
        print("\n".join(lines[-args.tail:] if args.tail else lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the devcluster command line."""
    ap = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up", help="start the cluster (idempotent) and wait until it runs pods")
    p.add_argument("--fake-gpus", type=int, default=None,
                   help="nvidia.com/gpu capacity to advertise when no GPU is found (default: "
                        "keep the current setting, 0 at first; applied to a running cluster)")
    p.add_argument("--nodes", type=int, default=None,
                   help="how many Nodes to register (default: keep the current setting, 1 at "
                        "first; applied to a running cluster)")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per readiness wait")
    p.set_defaults(fn=_up)
    p = sub.add_parser("down", help="stop every process devcluster started")
    p.add_argument("--purge", action="store_true", help="also delete .devcluster (etcd data...)")
    p.set_defaults(fn=_down)
    sub.add_parser("status", help="show components, readiness and pods").set_defaults(fn=_status)
    sub.add_parser("env", help="print export KUBECONFIG=... PATH=...").set_defaults(fn=_env)
    p = sub.add_parser("logs", help="list logs, or print one component's or pod's logs")
    p.add_argument("name", nargs="?", help=f"a component ({', '.join(COMPONENTS)}, audit) "
                                           "or a pod ([namespace/]pod)")
    p.add_argument("--tail", type=int, default=0, help="print only the last N lines")
    p.set_defaults(fn=_logs)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="devcluster: %(message)s")
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
