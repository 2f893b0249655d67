#!/usr/bin/env bash
# `make demo`: devcluster, the operator, the two-party example, the SecAgg+ federation, a summary.
#
# Starts devcluster (idempotent), installs the CRDs, the chart's admission policies and its roles
# for people, and runs the operator on the host against the devcluster kubeconfig, watching every
# namespace (a job on a PrivateDataset lives in the analyst's namespace and runs its trainer in the
# data owner's). Then the two-party flow of examples/two-party/README.md: the data owner (namespace
# clinic) loads records into a claim and declares a budget and a PrivateDataset granting ml-team;
# the analyst (ml-team) runs a DP-SGD job on it, receives the model on a claim in ml-team and
# measures its accuracy there. The SecAgg+ federation runs in PPML_DEMO_NAMESPACE beside it unless
# PPML_DEMO_FEDERATED=0. Ends with a summary: jobs, conditions, epsilon charged and measured,
# the delivered model's uri, the accuracy measured in ml-team, and the budgets.
# devcluster keeps running afterwards (`make devcluster-down`).
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

echo "== roles for people (ppml-analyst, ppml-data-owner, ppml-viewer)"
helm template ppml charts/ppml-operator --namespace ppml-system --kube-version "$kube_version" \
  --show-only templates/rbac-user-roles.yaml | kubectl apply -f - >/dev/null

echo "== operator, watching every namespace (log: .devcluster/logs/operator-demo.log)"
mkdir -p .devcluster/logs
$PY -m ppml_operator > .devcluster/logs/operator-demo.log 2>&1 &
operator_pid=$!
trap 'kill $operator_pid 2>/dev/null || true; wait $operator_pid 2>/dev/null || true' EXIT

TWO=examples/two-party
echo "== data owner: kubectl apply -n clinic -f $TWO/data-owner.yaml"
kubectl apply -n clinic -f "$TWO/data-owner.yaml"
kubectl -n clinic create rolebinding records-owner --clusterrole=ppml-data-owner --user=alice \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl wait -n clinic --for=condition=Complete job/load-records --timeout=300s
kubectl logs -n clinic job/load-records | tail -n 1

echo "== analyst: kubectl apply -n ml-team -f $TWO/analyst.yaml"
kubectl apply -n ml-team -f "$TWO/analyst.yaml"
kubectl -n ml-team create rolebinding analysts --clusterrole=ppml-analyst --group=ml-team \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
AS=(--as=bob --as-group=ml-team)
echo "   what the analyst (bob, group ml-team) may do:"
for check in "get pods -n clinic" "get privatedatasets -n clinic" "delete privacybudgets -n clinic" \
             "get pods -n ml-team" "create privatetrainingjobs -n ml-team" \
             "get privatetrainingjobs -n ml-team --subresource=status" \
             "create persistentvolumeclaims -n ml-team"; do
  # shellcheck disable=SC2086
  printf '   %-56s %s\n' "kubectl auth can-i $check" "$(kubectl auth can-i $check "${AS[@]}" 2>/dev/null || true)"
done

if [[ "${PPML_DEMO_FEDERATED:-1}" == 1 && -f examples/federated/digits-secagg.yaml ]]; then
  echo "== kubectl apply -n $NS -f examples/federated/digits-secagg.yaml"
  kubectl apply -n "$NS" -f examples/federated/digits-secagg.yaml
fi

echo "== progress"
deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
  $PY scripts/demo_summary.py --namespace ml-team --namespace "$NS" --progress
  if $PY scripts/demo_summary.py --namespace ml-team --namespace "$NS" --done; then break; fi
  if (( $(date +%s) > deadline )); then echo "demo: timed out after ${TIMEOUT}s" >&2; break; fi
  sleep 5
done

uri=$(kubectl get ptj digits-dp-sgd -n ml-team -o jsonpath='{.status.output.uri}')
accuracy="-"
if [[ -n "$uri" ]]; then
  echo "== analyst: the model is at $uri; kubectl apply -n ml-team -f $TWO/evaluate.yaml"
  kubectl apply -n ml-team -f "$TWO/evaluate.yaml"
  if kubectl wait -n ml-team --for=condition=Complete job/evaluate-digits --timeout=300s; then
    measured=$(kubectl logs -n ml-team job/evaluate-digits | tail -n 1)
    echo "   $measured"
    accuracy=$(printf '%s' "$measured" | $PY -c 'import json,sys; print(json.load(sys.stdin)["accuracy"])' 2>/dev/null || echo "-")
  else
    kubectl logs -n ml-team job/evaluate-digits --tail=20 >&2 || true
  fi
else
  echo "demo: ptj/digits-dp-sgd delivered no model (kubectl describe ptj -n ml-team digits-dp-sgd)" >&2
fi

echo "== summary"
$PY scripts/demo_summary.py --namespace ml-team --namespace clinic --namespace "$NS"
echo
echo "two-party: model ${uri:--} in ml-team, accuracy measured in ml-team ${accuracy}," \
  "budget clinic/digits spent epsilon $(kubectl get pbudget digits -n clinic -o jsonpath='{.status.spentEpsilon}')"
