"""devcluster: a one-machine Kubernetes control plane and a node agent running pods as processes.

``python -m devcluster up | down | status | env | logs`` manages it; :mod:`devcluster.cluster`
is the importable API tests and tools use (``ensure_up()``).
"""
