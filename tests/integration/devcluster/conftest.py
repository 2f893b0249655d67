"""Fixtures of the devcluster tests."""

from __future__ import annotations

import pytest
from dc_helpers import Kube

from devcluster.cluster import Cluster


@pytest.fixture
def kube(devcluster: Cluster, namespace: str) -> Kube:
    """A :class:`Kube` for the test's own namespace."""
    return Kube(devcluster.api(), namespace)
