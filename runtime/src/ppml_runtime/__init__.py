"""ppml_runtime: what runs inside the pods of ppml-operator jobs.

Roles are started as ``python -m ppml_runtime <role>``. Heavy libraries (torch, opacus, flwr)
are imported only by the roles that need them, never at package import.
"""

__version__ = "0.1.0"
