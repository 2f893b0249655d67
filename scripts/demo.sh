#!/usr/bin/env bash
# `make demo`: devcluster, the operator, the two-party example, a federation across two data
# owners, a summary.
#
# Starts devcluster (idempotent), installs the CRDs, the chart's admission policies and its roles
# for people, and runs the operator on the host against the devcluster kubeconfig, watching every
# namespace (a job on a PrivateDataset lives in the analyst's namespace and runs its trainer in the
# data owner's). Then the two-party flow of examples/two-party/README.md: the data owner (namespace
# clinic) loads records into a claim and declares a budget and a PrivateDataset granting ml-team;
# the analyst (ml-team) runs a DP-SGD job on it, receives the model on a claim in ml-team and
# measures its accuracy there. Unless PPML_DEMO_FEDERATED=0, examples/federated/across-clinics/
# runs beside it: two data owners (clinic-a, clinic-b: three disjoint digits shards, each with its
# own budget, granting ml-team) and ml-team's SecAgg+ federation with local DP across them, whose
# SuperNodes run in the clinics' namespaces and whose server side runs in ppml-system; its final
# global model is delivered onto ml-team's claim and measured there like the two-party model.
# Ends with a summary: jobs, conditions, epsilon charged and measured, the delivered models' uris,
# the accuracies measured in ml-team, and the budgets.
# devcluster keeps running afterwards (`make devcluster-down`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
FED=examples/federated/across-clinics
FEDERATED="${PPML_DEMO_FEDERATED:-1}"
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

# The operator's namespace: a federation across data owners runs its server side there.
kubectl create namespace ppml-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null

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

# The namespaces the summary reads: the two-party example's, and the federation's owners'.
NAMESPACES=(--namespace ml-team --namespace clinic)
if [[ "$FEDERATED" == 1 ]]; then
  echo "== a federation across two data owners: kubectl apply -f $FED/"
  # 00-clinic-a.yaml and 01-clinic-b.yaml are the owners' (namespaces, budgets, PrivateDatasets
  # granting ml-team); 02-ml-team.yaml is the analyst's SecAgg+ federation with local DP.
  kubectl apply -f "$FED/"
  NAMESPACES+=(--namespace clinic-a --namespace clinic-b)
fi

echo "== progress"
deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
  $PY scripts/demo_summary.py "${NAMESPACES[@]}" --progress
  if $PY scripts/demo_summary.py "${NAMESPACES[@]}" --done; then break; fi
  if (( $(date +%s) > deadline )); then echo "demo: timed out after ${TIMEOUT}s" >&2; break; fi
  sleep 5
done

# evaluate KIND NAME JOB: load the model KIND/NAME delivered onto ml-team's claim and measure it
# on public digits there, with examples/two-party/evaluate.yaml (as Job JOB, for NAME's path);
# sets uri and accuracy.
evaluate() {
  local kind=$1 name=$2 job=$3
  uri=$(kubectl get "$kind" "$name" -n ml-team -o jsonpath='{.status.output.uri}')
  accuracy="-"
  if [[ -z "$uri" ]]; then
    echo "demo: $kind/$name delivered no model (kubectl describe $kind -n ml-team $name)" >&2
    return 0
  fi
  echo "== analyst: the model is at $uri; kubectl apply -n ml-team -f $TWO/evaluate.yaml (job $job)"
  sed -e "s#name: evaluate-digits#name: $job#" -e "s#/models/digits-dp-sgd#/models/${uri#pvc://*/}#" \
    "$TWO/evaluate.yaml" | kubectl apply -n ml-team -f -
  if kubectl wait -n ml-team --for=condition=Complete "job/$job" --timeout=300s; then
    measured=$(kubectl logs -n ml-team "job/$job" | tail -n 1)
    echo "   $measured"
    accuracy=$(printf '%s' "$measured" | $PY -c 'import json,sys; print(json.load(sys.stdin)["accuracy"])' 2>/dev/null || echo "-")
  else
    kubectl logs -n ml-team "job/$job" --tail=20 >&2 || true
  fi
}

evaluate ptj digits-dp-sgd evaluate-digits
two_party_uri=$uri two_party_accuracy=$accuracy
if [[ "$FEDERATED" == 1 ]]; then
  evaluate fedjob digits-across-clinics evaluate-across-clinics
  fed_uri=$uri fed_accuracy=$accuracy
fi

echo "== summary"
$PY scripts/demo_summary.py "${NAMESPACES[@]}"
echo
spent() { kubectl get pbudget "$2" -n "$1" -o jsonpath='{.status.spentEpsilon}' 2>/dev/null || echo "-"; }
echo "two-party: model ${two_party_uri:--} in ml-team, accuracy measured in ml-team" \
  "${two_party_accuracy}, budget clinic/digits spent epsilon $(spent clinic digits)"
if [[ "$FEDERATED" == 1 ]]; then
  echo "across clinics: SecAgg+ federation with local DP, SuperNodes in clinic-a and clinic-b," \
    "server side in ppml-system; model ${fed_uri:--} in ml-team, accuracy measured in ml-team" \
    "${fed_accuracy}; epsilon spent: clinic-a/records $(spent clinic-a records)," \
    "clinic-b/north-records $(spent clinic-b north-records)," \
    "clinic-b/south-records $(spent clinic-b south-records)"
fi
