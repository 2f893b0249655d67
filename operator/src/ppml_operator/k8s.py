"""The only module that talks to the Kubernetes API server.

Everything the operator reads or writes goes through :class:`Client`: plain dicts in, plain dicts
out, one REST call per method, no caching. The ledger's compare-and-swap is
:meth:`Client.replace_status` (a ``PUT`` of the whole object carrying its
``metadata.resourceVersion``, answered 409 when somebody else wrote first); nothing here issues a
merge patch against a budget.

Configuration follows DESIGN §8: ``KUBECONFIG`` (or ``~/.kube/config``) when set or present, the
in-cluster service-account config otherwise. kopf reads ``KUBECONFIG`` at import time, so
``__main__`` resolves the configuration before importing kopf.

Fault injection for the reliability tests (never set in production): ``PPML_FAULTS`` is a comma
list of ``lose-response:KIND/SUBRESOURCE[:COUNT]`` entries. A matching write is applied by the
server, then :class:`ResponseLostError` is raised as if the connection had dropped before the
answer arrived.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from ppml_operator.api import GROUP

VERSION = "v1alpha1"
"""The served version of the ppml.dev kinds."""

Obj = dict[str, Any]


class KubernetesError(Exception):
    """An API request failed; ``status`` is the HTTP status (0 when no answer arrived)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFoundError(KubernetesError):
    """The object does not exist (HTTP 404)."""


class ConflictError(KubernetesError):
    """A precondition failed or the object already exists (HTTP 409)."""


class ForbiddenError(KubernetesError):
    """RBAC refused the request (HTTP 403)."""


class ResponseLostError(KubernetesError):
    """The request may have been applied, but no answer arrived (an injected fault)."""


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API."""

    prefix: str
    plural: str

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        """Return the REST path of the collection or of one object (no namespace: cluster)."""
        path = f"{self.prefix}/namespaces/{quote(namespace)}/{self.plural}" if namespace \
            else f"{self.prefix}/{self.plural}"
        if name is not None:
            path += f"/{quote(name)}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


RESOURCES: dict[str, Resource] = {
    "ConfigMap": Resource("/api/v1", "configmaps"),
    "Service": Resource("/api/v1", "services"),
    "ServiceAccount": Resource("/api/v1", "serviceaccounts"),
    "Pod": Resource("/api/v1", "pods"),
    "Namespace": Resource("/api/v1", "namespaces"),
    "Secret": Resource("/api/v1", "secrets"),
    "Event": Resource("/api/v1", "events"),
    "Job": Resource("/apis/batch/v1", "jobs"),
    "NetworkPolicy": Resource("/apis/networking.k8s.io/v1", "networkpolicies"),
    "PersistentVolumeClaim": Resource("/api/v1", "persistentvolumeclaims"),
    "PrivateDataset": Resource(f"/apis/{GROUP}/{VERSION}", "privatedatasets"),
    "PrivacyBudget": Resource(f"/apis/{GROUP}/{VERSION}", "privacybudgets"),
    "PrivateTrainingJob": Resource(f"/apis/{GROUP}/{VERSION}", "privatetrainingjobs"),
    "FederatedJob": Resource(f"/apis/{GROUP}/{VERSION}", "federatedjobs"),
}
"""Every kind the operator reads or writes."""


def load_configuration(kubeconfig: str | None = None) -> k8s_client.Configuration:
    """Resolve the API server connection: a kubeconfig file, else the in-cluster config.

    Parameters
    ----------
    kubeconfig
        A kubeconfig path; ``KUBECONFIG`` or ``~/.kube/config`` when not given.

    Returns
    -------
    kubernetes.client.Configuration
        The connection settings.

    """
    configuration = k8s_client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    default = os.path.expanduser("~/.kube/config")
    if not path and os.path.exists(default):
        path = default
    if path:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, client_configuration=configuration
        )
    else:
        try:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except ConfigException as err:
            raise KubernetesError(
                0, "NoConfig", f"no kubeconfig, no in-cluster config: {err}"
            ) from err
    return configuration


class _Faults:
    """Injected faults from ``PPML_FAULTS`` (reliability tests only)."""

    def __init__(self, spec: str) -> None:
        self._lock = threading.Lock()
        self._left: dict[str, int] = {}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            parts = item.split(":")
            if parts[0] == "lose-response" and len(parts) >= 2:
                self._left[parts[1]] = int(parts[2]) if len(parts) > 2 else 1

    def lose_response(self, target: str) -> bool:
        """Return True (once per configured count) when the answer for ``target`` is to be lost."""
        with self._lock:
            left = self._left.get(target, 0)
            if left <= 0:
                return False
            self._left[target] = left - 1
            return True


class Client:
    """A thin, synchronous REST client over the official ``kubernetes`` package.

    Parameters
    ----------
    configuration
        Connection settings; :func:`load_configuration` when not given.
    timeout
        Per-request timeout in seconds.

    """

    def __init__(
        self, configuration: k8s_client.Configuration | None = None, timeout: float = 30.0
    ) -> None:
        configuration = configuration or load_configuration()
        # One connection per handler thread (kopf runs up to 16): a smaller pool discards and
        # re-opens TLS connections under load, which costs more than the requests themselves.
        configuration.connection_pool_maxsize = 32
        self._api = k8s_client.ApiClient(configuration)
        self._timeout = timeout
        self._faults = _Faults(os.environ.get("PPML_FAULTS", ""))

    def close(self) -> None:
        """Release the connection pool."""
        self._api.close()  # type: ignore[no-untyped-call]

    # -- transport ----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        """Send one request and return the decoded JSON answer.

        Raises
        ------
        NotFoundError, ConflictError, ForbiddenError, KubernetesError
            On a non-2xx answer.

        """
        if query:
            path = f"{path}?{urlencode(dict(query))}"
        headers = {"Accept": "application/json", "Content-Type": content_type}
        serialized = self._api.param_serialize(
            method=method,
            resource_path=path,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(*serialized, _request_timeout=self._timeout)
        except k8s_client.ApiException as err:
            raise _error(err.status or 0, str(err.reason), str(err.body or "")) from err
        response.read()  # type: ignore[no-untyped-call]
        text = response.data.decode("utf-8") if response.data else ""
        if not 200 <= response.status <= 299:
            reason, message = str(response.reason), text
            try:
                decoded = json.loads(text)
                reason = str(decoded.get("reason", reason))
                message = str(decoded.get("message", message))
            except (ValueError, AttributeError):
                pass
            raise _error(response.status, reason, message)
        result: Obj = json.loads(text) if text else {}
        return result

    # -- generic objects ----------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        """Return the object, or None when it does not exist."""
        try:
            return self.request("GET", RESOURCES[kind].path(namespace, name))
        except NotFoundError:
            return None

    def list(self, kind: str, namespace: str, label_selector: str | None = None) -> list[Obj]:
        """Return the objects of a kind in a namespace, optionally filtered by labels."""
        query = {"labelSelector": label_selector} if label_selector else None
        answer = self.request("GET", RESOURCES[kind].path(namespace), query=query)
        items: list[Obj] = answer.get("items", [])
        for item in items:  # list items carry no kind/apiVersion; restore them for callers
            item.setdefault("kind", kind)
        return items

    def create(self, obj: Obj) -> Obj:
        """Create an object; raise :class:`ConflictError` when it exists already."""
        meta = obj["metadata"]
        return self.request("POST", RESOURCES[obj["kind"]].path(meta["namespace"]), body=obj)

    def ensure(self, obj: Obj) -> tuple[Obj, bool]:
        """Create an object unless one of that name exists; return it and whether it was created."""
        try:
            return self.create(obj), True
        except ConflictError:
            meta = obj["metadata"]
            existing = self.get(obj["kind"], meta["namespace"], meta["name"])
            if existing is None:  # deleted in between: try once more
                return self.create(obj), True
            return existing, False

    def delete(
        self,
        kind: str,
        namespace: str,
        name: str,
        *,
        propagation: str = "Background",
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> bool:
        """Delete an object, with optional preconditions; return False when it was already gone.

        Raises
        ------
        ConflictError
            When a precondition (``uid``, ``resource_version``) no longer holds.

        """
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        preconditions = {}
        if uid:
            preconditions["uid"] = uid
        if resource_version:
            preconditions["resourceVersion"] = resource_version
        if preconditions:
            body["preconditions"] = preconditions
        try:
            self.request("DELETE", RESOURCES[kind].path(namespace, name), body=body)
        except NotFoundError:
            return False
        return True

    def patch(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj:
        """Merge-patch an object's spec or metadata (never used for budgets' status)."""
        return self.request(
            "PATCH",
            RESOURCES[kind].path(namespace, name),
            body=patch,
            content_type="application/merge-patch+json",
        )

    # -- status -------------------------------------------------------------------------------

    def replace_status(self, obj: Obj) -> Obj:
        """Compare-and-swap an object's status: ``PUT /status`` with its resourceVersion.

        Parameters
        ----------
        obj
            The whole object as last read, with the new ``status`` and the unchanged
            ``metadata.resourceVersion``.

        Returns
        -------
        dict
            The object as stored (with its new resourceVersion).

        Raises
        ------
        ConflictError
            When the object changed since it was read (somebody else wrote first).
        ResponseLostError
            When a lost answer is injected: the write was applied, the caller cannot know.

        """
        meta = obj["metadata"]
        if not meta.get("resourceVersion"):
            raise ValueError("replace_status needs metadata.resourceVersion (compare-and-swap)")
        kind = obj["kind"]
        stored = self.request(
            "PUT", RESOURCES[kind].path(meta["namespace"], meta["name"], "status"), body=obj
        )
        if self._faults.lose_response(f"{kind}/status"):
            raise ResponseLostError(0, "ResponseLost", f"the answer to PUT {kind}/status was lost")
        return stored

    def patch_status(self, kind: str, namespace: str, name: str, status: Obj) -> Obj:
        """Merge-patch the status of an object the operator alone writes (jobs, never budgets)."""
        return self.request(
            "PATCH",
            RESOURCES[kind].path(namespace, name, "status"),
            body={"status": status},
            content_type="application/merge-patch+json",
        )


def _error(status: int, reason: str, message: str) -> KubernetesError:
    cls: type[KubernetesError] = {
        404: NotFoundError,
        409: ConflictError,
        403: ForbiddenError,
    }.get(status, KubernetesError)
    return cls(status, reason, message)
