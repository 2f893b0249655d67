"""Import flwr once with typer's click deprecation silenced.

flwr imports typer, which uses a click API deprecated in click 8.3, and pytest turns warnings
into errors; the builders live in ``fed_builders``.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import flwr.common  # noqa: F401
