"""The ServerApp component: :mod:`ppml_runtime.federated.server_app`."""

from ppml_runtime.federated.server_app import app

__all__ = ["app"]
