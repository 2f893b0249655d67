"""The ClientApp component: :mod:`ppml_runtime.federated.client_app`."""

from ppml_runtime.federated.client_app import app

__all__ = ["app"]
