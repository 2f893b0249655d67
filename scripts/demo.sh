#!/usr/bin/env bash
# `make demo`: devcluster, the operator, the example jobs, and a summary.
#
# Starts devcluster (idempotent), installs the CRDs, runs the operator on the host against the
# devcluster kubeconfig (watching the demo namespace), applies the DP-SGD example (and the SecAgg+
# federation unless PPML_DEMO_FEDERATED=0), shows progress
# while they run, and ends with a summary: job, condition, accuracy, epsilon charged and
# measured, budget remaining. devcluster keeps running afterwards (`make devcluster-down`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
NS="${PPML_DEMO_NAMESPACE:-ppml-demo}"
TIMEOUT="${PPML_DEMO_TIMEOUT:-900}"
export PATH="$(devcluster/scripts/build-tools.sh):$PWD/.venv/bin:$PATH"

echo "== devcluster"
$PY -m devcluster up
eval "$($PY -m devcluster env)"  # KUBECONFIG of this devcluster (DEVCLUSTER_INSTANCE-aware)
kubectl get nodes

echo "== CRDs"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null

echo "== admission policies (the ledger guard: a budget holding charges cannot be deleted)"
# The chart's ValidatingAdmissionPolicies, as `helm install` would create them. The operator runs
# on the host with the admin certificate (devcluster-admin), so that identity is trusted as the
# operator here; a real install trusts only the chart's ServiceAccount.
kube_version=$(kubectl version -o json | $PY -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')
helm template ppml charts/ppml-operator --namespace ppml-system --kube-version "$kube_version" \
  --show-only templates/admission-ledger-guard.yaml --show-only templates/admission-job-guard.yaml \
  --set 'admissionPolicies.extraOperatorUsernames={devcluster-admin}' | kubectl apply -f - >/dev/null
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl label namespace "$NS" pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null

echo "== operator (log: .devcluster/logs/operator-demo.log)"
mkdir -p .devcluster/logs
$PY -m ppml_operator --namespace "$NS" > .devcluster/logs/operator-demo.log 2>&1 &
operator_pid=$!
trap 'kill $operator_pid 2>/dev/null || true; wait $operator_pid 2>/dev/null || true' EXIT

manifests=(examples/private-training/digits-dp-sgd.yaml)
if [[ "${PPML_DEMO_FEDERATED:-1}" == 1 && -f examples/federated/digits-secagg.yaml ]]; then
  manifests+=(examples/federated/digits-secagg.yaml)
fi
for m in "${manifests[@]}"; do
  echo "== kubectl apply -n $NS -f $m"
  kubectl apply -n "$NS" -f "$m"
done

echo "== progress"
deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
  $PY scripts/demo_summary.py --namespace "$NS" --progress
  if $PY scripts/demo_summary.py --namespace "$NS" --done; then break; fi
  if (( $(date +%s) > deadline )); then echo "demo: timed out after ${TIMEOUT}s" >&2; break; fi
  sleep 5
done

echo "== summary"
$PY scripts/demo_summary.py --namespace "$NS"
