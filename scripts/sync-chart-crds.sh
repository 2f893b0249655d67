#!/usr/bin/env bash
# Copy the generated CRDs (crds/*.yaml) into the Helm chart (charts/ppml-operator/templates/crds/),
# each wrapped in `{{- if .Values.crds.enabled }} ... {{- end }}` and annotated
# `helm.sh/resource-policy: keep` (and Argo CD's Delete=false,Prune=false) when `.Values.crds.keep`
# is set.
#
# Usage: scripts/sync-chart-crds.sh           rewrite the chart's copies
#        scripts/sync-chart-crds.sh --check   exit 1 (and show the diff) if the copies drifted
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$repo/crds"
dst="$repo/charts/ppml-operator/templates/crds"
mode="${1:-write}"
case "$mode" in
  write|--check) ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

shopt -s nullglob
sources=("$src"/*.yaml)
if ((${#sources[@]} == 0)); then
  echo "sync-chart-crds: no CRDs in $src (run the CRD generator first)" >&2
  exit 1
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

for f in "${sources[@]}"; do
  python3 - "$f" "$out/$(basename "$f")" <<'PY'
"""Wrap one CRD manifest in the chart's crds.enabled switch and add the keep annotation."""
import sys

src, dst = sys.argv[1], sys.argv[2]
text = open(src, encoding="utf-8").read()
if "{{" in text or "}}" in text:
    sys.exit(f"sync-chart-crds: {src} contains '{{{{' or '}}}}', which Helm would template")
lines = text.splitlines()
# helm uninstall honours the first annotation, Argo CD (which renders charts itself) the second.
keep_block = [
    "  {{- if .Values.crds.keep }}",
    "  annotations:",
    "    helm.sh/resource-policy: keep",
    "    argocd.argoproj.io/sync-options: Delete=false,Prune=false",
    "  {{- end }}",
]
keep_line = [
    "    {{- if .Values.crds.keep }}",
    "    helm.sh/resource-policy: keep",
    "    argocd.argoproj.io/sync-options: Delete=false,Prune=false",
    "    {{- end }}",
]
result: list[str] = []
i = 0
while i < len(lines):
    line = lines[i]
    result.append(line)
    if line.rstrip() == "metadata:":
        # Find this metadata block (lines indented under it) and any annotations map in it.
        j = i + 1
        while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
            j += 1
        block = lines[i + 1 : j]
        ann = next((k for k, b in enumerate(block) if b.rstrip() == "  annotations:"), None)
        if ann is None:
            result.extend(keep_block)
            result.extend(block)
        else:
            result.extend(block[: ann + 1])
            result.extend(keep_line)
            result.extend(block[ann + 1 :])
        i = j
        continue
    i += 1
body = "\n".join(result)
with open(dst, "w", encoding="utf-8") as out:
    out.write("{{- if .Values.crds.enabled }}\n")
    out.write(f"# Copied from crds/{src.rsplit('/', 1)[-1]} by scripts/sync-chart-crds.sh; do not edit.\n")
    out.write(body.rstrip("\n") + "\n")
    out.write("{{- end }}\n")
PY
done

if [[ "$mode" == "--check" ]]; then
  if ! diff -ru "$dst" "$out" >&2; then
    echo "sync-chart-crds: the chart's CRDs differ from crds/; run scripts/sync-chart-crds.sh" >&2
    exit 1
  fi
  echo "sync-chart-crds: chart CRDs match crds/"
  exit 0
fi

mkdir -p "$dst"
rm -f "$dst"/*.yaml
cp "$out"/*.yaml "$dst"/
echo "sync-chart-crds: wrote ${#sources[@]} CRD(s) to ${dst#"$repo"/}"
