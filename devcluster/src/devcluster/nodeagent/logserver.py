"""The node's log endpoint, so ``kubectl logs`` works: ``GET /containerLogs/<ns>/<pod>/<c>``.

The API server proxies ``kubectl logs`` to the Node's ``daemonEndpoints.kubeletEndpoint`` port
on its InternalIP. This serves each container's log file over HTTPS with a certificate from the
devcluster CA and accepts only clients with a certificate from that CA (the API server's
kubelet-client certificate). Supported: ``tailLines``, ``limitBytes``, ``follow``.
"""

from __future__ import annotations

import http.server
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from devcluster.paths import BRIDGE_IP, KUBELET_PORT, Paths

log = logging.getLogger("devcluster.nodeagent")


def _tail(data: bytes, lines: int) -> bytes:
    if lines < 0:
        return data
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:]) if lines else b""


def serve(paths: Paths, running: Callable[[str, str], bool]) -> threading.Thread:
    """Start the log server in a daemon thread and return the thread.

    Parameters
    ----------
    paths
        The state directory (log files, certificates).
    running
        ``running(namespace, pod)``: whether the pod still runs (a follow ends when it stops).

    """

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:
            log.debug("Served log request: " + fmt, *args)

        def do_GET(self) -> None:
            u = urllib.parse.urlsplit(self.path)
            parts = u.path.strip("/").split("/")
            if len(parts) != 4 or parts[0] != "containerLogs":
                self.send_error(404, "only /containerLogs/<ns>/<pod>/<container> is served")
                return
            _, ns, pod, container = parts
            q = {k: v[-1] for k, v in urllib.parse.parse_qs(u.query).items()}
            f = paths.pod_logs / f"{ns}_{pod}_{container}.log"
            if not f.exists():
                self.send_error(404, f"no log for container {container} of pod {ns}/{pod}")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            data = f.read_bytes()
            data = _tail(data, int(q.get("tailLines", "-1")))
            if "limitBytes" in q:
                data = data[: int(q["limitBytes"])]
            self.wfile.write(data)
            self.wfile.flush()
            if q.get("follow") not in ("true", "1"):
                return
            self._follow(f, f.stat().st_size, ns, pod)

        def _follow(self, f: Path, pos: int, ns: str, pod: str) -> None:
            idle_after_stop = 0
            with open(f, "rb") as fh:
                fh.seek(pos)
                while idle_after_stop < 5:
                    chunk = fh.read(65536)
                    if chunk:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        continue
                    if not running(ns, pod):
                        idle_after_stop += 1
                    time.sleep(0.2)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(paths.pki / "kubelet.crt"), str(paths.pki / "kubelet.key"))
    ctx.load_verify_locations(str(paths.pki / "ca.crt"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    server = http.server.ThreadingHTTPServer((BRIDGE_IP, KUBELET_PORT), Handler)
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    t = threading.Thread(target=server.serve_forever, name="logserver", daemon=True)
    t.start()
    log.info("Serving container logs on %s:%d", BRIDGE_IP, KUBELET_PORT)
    return t
