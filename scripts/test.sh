#!/usr/bin/env bash
# `make test`: unit tier (parallel, no cluster) while devcluster starts, then the integration
# and e2e tiers against it; devcluster is stopped at the end if this script started it.
#
# Usage: scripts/test.sh [all|unit|integration|e2e] [extra pytest args...]
set -uo pipefail
cd "$(dirname "$0")/.."
tier="${1:-all}"; shift || true
PY=.venv/bin/python
bin_dir=$(devcluster/scripts/build-tools.sh) || { echo "test: tools missing; run make tools" >&2; exit 1; }
export PATH="$bin_dir:$PWD/.venv/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1
mkdir -p .devcluster
rc=0
started_cluster=0

cluster_up() {
  if $PY -m devcluster status >/dev/null 2>&1; then return 0; fi
  started_cluster=1
  $PY -m devcluster up
}
cleanup() {
  if [[ $started_cluster == 1 ]]; then $PY -m devcluster down || true; fi
}
trap cleanup EXIT

t0=$(date +%s)
case "$tier" in
  unit)
    $PY -m pytest tests/unit -q -n 2 "$@" || rc=$?
    ;;
  integration|e2e)
    cluster_up || exit 1
    $PY -m pytest "tests/$tier" -q -p no:xdist "$@" || rc=$?
    ;;
  all)
    # devcluster's start-up is mostly waiting; overlap it with the CPU-bound unit tier.
    if ! $PY -m devcluster status >/dev/null 2>&1; then
      started_cluster=1
      $PY -m devcluster up > .devcluster/up.log 2>&1 &
      up_pid=$!
    fi
    $PY -m pytest tests/unit -q -n 2 "$@" || rc=$?
    echo "test: unit tier done in $(( $(date +%s) - t0 )) s (rc=$rc)"
    if [[ -n "${up_pid:-}" ]]; then
      wait "$up_pid" || { echo "test: devcluster up failed:" >&2; cat .devcluster/up.log >&2; exit 1; }
    fi
    t1=$(date +%s)
    $PY -m pytest tests/integration tests/e2e -q -p no:xdist "$@" || rc=$?
    echo "test: integration and e2e tiers done in $(( $(date +%s) - t1 )) s (rc=$rc)"
    ;;
  *) echo "test: unknown tier $tier (all|unit|integration|e2e)" >&2; exit 2 ;;
esac
echo "test: finished in $(( $(date +%s) - t0 )) s, rc=$rc"
exit $rc
