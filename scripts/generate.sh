#!/usr/bin/env bash
# `make generate`: everything generated from the API models. `make verify` runs this and fails on
# any git diff, and unit tests run the same comparisons so plain pytest catches drift too.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY -m ppml_operator.api.crdgen --out crds
scripts/sync-chart-crds.sh
$PY -m ppml_operator.api.docgen > docs/api-reference.md
