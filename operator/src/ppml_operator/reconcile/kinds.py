"""The kinds of job the operator installs: importing this module registers each with the lifecycle.

Like Kueue's ``pkg/controller/jobs/jobs.go``, this is the one list of integrations; the core
(:mod:`ppml_operator.reconcile.lifecycle`) never imports a kind, and the handlers loop over
:func:`ppml_operator.reconcile.lifecycle.kinds`.
"""

from __future__ import annotations

from ppml_operator.reconcile import federated, training

TRAINING = training.TRAINING
FEDERATED = federated.FEDERATED
INSTALLED = (TRAINING, FEDERATED)
"""The adapters registered by importing this module, in registration order."""
