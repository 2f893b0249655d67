"""Test scaffolding shared by every tier, in one place (as Kueue's ``pkg/util/testingjobs``).

- :mod:`ppml_testing.manifests`: valid manifests of every kind, then edits by dotted path;
- :mod:`ppml_testing.fedjobs`: the fluent FederatedJob builder;
- :mod:`ppml_testing.objects`: objects as the API server hands them over (jobs with uid and
  generation, budgets with a resourceVersion, batch Jobs, pods) and ``Observed`` for ``decide``;
- :mod:`ppml_testing.conditions`: the one condition matcher.

It is importable because pytest's ``pythonpath`` setting (pyproject.toml) puts ``tests/`` on
the path; no test edits ``sys.path``.
"""
