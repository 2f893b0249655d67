"""The ppml.dev API: pydantic models, condition vocabulary, domain errors and CRD generation.

The models in :mod:`ppml_operator.api.v1alpha1` are the single source of the API: the CRD YAML
under ``crds/``, the ``kubectl explain`` text and the docs in ``docs/api-reference.md`` are
generated from them. This package imports no kopf and no Kubernetes client.
"""

GROUP = "ppml.dev"
"""The API group of every kind the operator serves."""
