"""ppml_operator: a Kubernetes operator for privacy-preserving machine learning.

The package root imports nothing: kopf, the Kubernetes client and dp-accounting are imported
by the modules that need them, so ``ppml --help`` and the pure layers stay cheap to import.
"""

__version__ = "0.1.0"
