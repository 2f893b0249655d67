#!/usr/bin/env bash
# `make bench`: every benchmark prints ratios measured side by side in one run and writes JSON to
# benchmarks/results/. Benchmarks that need devcluster start it (and stop it if they started it).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export PATH="$(devcluster/scripts/build-tools.sh):$PWD/.venv/bin:$PATH"
mkdir -p benchmarks/results
rc=0
for b in benchmarks/accounting.py benchmarks/dp_sgd.py benchmarks/federated.py benchmarks/admission.py; do
  [[ -f "$b" ]] || continue
  echo "== $b"
  $PY "$b" || rc=$?
done
exit $rc
