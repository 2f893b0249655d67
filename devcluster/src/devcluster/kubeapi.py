"""A minimal Kubernetes REST client on the standard library (JSON dicts in, JSON dicts out).

The node agent and the control-plane readiness checks use it, so they need neither the generated
``kubernetes`` models nor a particular client version. One HTTPS connection per request (closed
afterwards), so a client holds no sockets between calls.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devcluster.paths import Paths, apiserver_url


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, body: Any, method: str, path: str) -> None:
        self.status = status
        self.body = body
        msg = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {path} failed with HTTP {status}: {msg}")


class Client:
    """Talk to one API server with a client certificate or a bearer token.

    Parameters
    ----------
    server
        ``https://host:port``.
    ca
        The CA bundle that signed the server certificate.
    cert, key
        Client certificate and key (optional).
    token
        Bearer token (optional).
    timeout
        Socket timeout for ordinary requests, in seconds.

    """

    def __init__(
        self,
        server: str,
        ca: Path,
        cert: Path | None = None,
        key: Path | None = None,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        u = urllib.parse.urlsplit(server)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 443
        self.ctx = ssl.create_default_context(cafile=str(ca))
        if cert and key:
            self.ctx.load_cert_chain(str(cert), str(key))
        self.token = token
        self.timeout = timeout

    @classmethod
    def admin(cls, paths: Paths, timeout: float = 30.0) -> Client:
        """Return a client with the admin client certificate of ``paths``."""
        return cls(
            apiserver_url(), paths.pki / "ca.crt",
            paths.pki / "admin.crt", paths.pki / "admin.key", timeout=timeout,
        )

    def _headers(self, content_type: str | None) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if content_type:
            h["Content-Type"] = content_type
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    def _conn(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """Send one request and return the decoded JSON answer (or the text).

        Raises
        ------
        ApiError
            On any non-2xx status.

        """
        if params:
            path = f"{path}?{urllib.parse.urlencode(params)}"
        data = None if body is None else json.dumps(body).encode()
        headers = self._headers(content_type if data is not None else None)
        conn = self._conn(self.timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        text = raw.decode(errors="replace")
        try:
            out = json.loads(text) if text else None
        except json.JSONDecodeError:
            out = text
        if not 200 <= resp.status < 300:
            raise ApiError(resp.status, out, method, path)
        return out

    def get(self, path: str, **params: Any) -> Any:
        """GET ``path`` with query ``params``."""
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any) -> Any:
        """POST ``body`` to ``path``."""
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> Any:
        """PUT ``body`` to ``path``."""
        return self.request("PUT", path, body)

    def patch(self, path: str, body: Any, kind: str = "merge") -> Any:
        """PATCH ``path`` with a ``merge`` or ``strategic`` or ``json`` patch."""
        ct = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
        }[kind]
        return self.request("PATCH", path, body, content_type=ct)

    def delete(self, path: str, body: Any = None) -> Any:
        """DELETE ``path`` (optionally with DeleteOptions)."""
        return self.request("DELETE", path, body)

    def watch(
        self, path: str, resource_version: str, timeout_s: int = 60, **params: Any
    ) -> Iterator[dict[str, Any]]:
        """Yield watch events of ``path`` from ``resource_version`` until the server ends it.

        Raises
        ------
        ApiError
            When the server refuses the watch (e.g. 410 Gone: relist).

        """
        q = {"watch": "1", "resourceVersion": resource_version,
             "timeoutSeconds": str(timeout_s), "allowWatchBookmarks": "true", **params}
        full = f"{path}?{urllib.parse.urlencode(q)}"
        conn = self._conn(timeout_s + 30)
        try:
            conn.request("GET", full, headers=self._headers(None))
            resp = conn.getresponse()
            if resp.status != 200:
                raise ApiError(resp.status, resp.read().decode(errors="replace"), "WATCH", path)
            while True:
                line = resp.readline()
                if not line:
                    return
                if line.strip():
                    ev = json.loads(line)
                    if ev.get("type") == "ERROR":
                        st = ev.get("object", {})
                        raise ApiError(int(st.get("code", 500)), st, "WATCH", path)
                    yield ev
        finally:
            conn.close()
