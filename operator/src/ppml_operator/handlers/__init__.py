"""kopf handlers: thin edges that observe, call the pure ``decide`` and act through ``k8s``.

Importing :mod:`ppml_operator.handlers.register` registers every handler with kopf.
"""
