#!/usr/bin/env bash
# Build the Kubernetes control-plane binaries, kubectl, etcd and helm from the official Go
# modules at pinned versions, cached by version outside the repository.
#
# Usage: build-tools.sh            (prints the bin directory on stdout when done)
# Env:   KUBEBUILDER_ASSETS  a directory of prebuilt binaries to use instead (envtest convention)
#        PPML_CACHE_DIR      cache root (default ~/.cache/ppml-operator)
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.5}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
CACHE="${PPML_CACHE_DIR:-$HOME/.cache/ppml-operator}"
BIN="$CACHE/tools/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION/bin"
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

log() { echo "build-tools: $*" >&2; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for b in kube-apiserver etcd; do
    [[ -x "$KUBEBUILDER_ASSETS/$b" ]] || { log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no $b"; exit 1; }
  done
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

# helm's release builds set the Kubernetes version `helm template` assumes offline from their
# client-go (helm's Makefile, K8S_MODULES_MINOR_VER); a plain `go build` leaves v1.20.0, which
# fails every chart with a kubeVersion above it. This marker says helm was built the release way.
HELM_MARKER="$BIN/.helm-kube-version-from-client-go"

have_all() {
  for b in "${K8S_BINARIES[@]}" etcd helm; do [[ -x "$BIN/$b" ]] || return 1; done
  [[ -f "$HELM_MARKER" ]]
}
if have_all; then echo "$BIN"; exit 0; fi

mkdir -p "$BIN"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
work="$CACHE/tools/src-k8s-$K8S_VERSION"
mkdir -p "$work"

missing_k8s=()
for b in "${K8S_BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || missing_k8s+=("$b"); done
if ((${#missing_k8s[@]})); then
  log "building ${missing_k8s[*]} from k8s.io/kubernetes@$K8S_VERSION"
  cd "$work"
  if [[ ! -f go.mod ]]; then
    modfile=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    staging_version="v0.${K8S_VERSION#v1.}"
    {
      echo "module ppml.dev/devcluster-tools"
      echo
      echo "go 1.24"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      # k8s.io/kubernetes points its staging modules at ./staging; a consumer replaces them with
      # the published module versions of the same release.
      grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/' "$modfile" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
    } > go.mod.tmp
    mv go.mod.tmp go.mod
  fi
  commit=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("Origin",{}).get("Hash","unknown"))')
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for kv in "gitVersion=$K8S_VERSION" "gitMajor=1" "gitMinor=$minor" "gitCommit=$commit" \
            "gitTreeState=clean" "buildDate=2026-01-01T00:00:00Z"; do
    ldflags+=" -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
  done
  pkgs=()
  for b in "${missing_k8s[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  go build -mod=mod -trimpath -ldflags "$ldflags" -o "$BIN/" "${pkgs[@]}"
fi

if [[ ! -x "$BIN/etcd" ]]; then
  log "building etcd from go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  ew="$CACHE/tools/src-etcd-$ETCD_VERSION"; mkdir -p "$ew"; cd "$ew"
  [[ -f go.mod ]] || { go mod init ppml.dev/etcd-tools >/dev/null 2>&1; go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1; }
  go build -mod=mod -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
fi

if [[ ! -x "$BIN/helm" || ! -f "$HELM_MARKER" ]]; then
  log "building helm from helm.sh/helm/v3@$HELM_VERSION"
  hw="$CACHE/tools/src-helm-$HELM_VERSION"; mkdir -p "$hw"; cd "$hw"
  [[ -f go.mod ]] || { go mod init ppml.dev/helm-tools >/dev/null 2>&1; go get "helm.sh/helm/v3@$HELM_VERSION" >/dev/null 2>&1; }
  client_go=$(go list -mod=mod -m -f '{{.Version}}' k8s.io/client-go)  # e.g. v0.34.0
  kube_minor=${client_go#v0.}; kube_minor=${kube_minor%%.*}
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$kube_minor"
  done
  # Built beside and moved into place, so a helm already in use is never half-written.
  go build -mod=mod -trimpath -ldflags "$ldflags" -o "$BIN/helm.new" helm.sh/helm/v3/cmd/helm
  mv -f "$BIN/helm.new" "$BIN/helm"
  echo "v1.$kube_minor" > "$HELM_MARKER"
fi

have_all || { log "some binaries are missing from $BIN"; exit 1; }
echo "$BIN"
