#!/usr/bin/env bash
# Create (or reuse) the project's Python environment, cached outside the repository, and link it
# as ./.venv so `.venv/bin/python` and `.venv/bin/ppml` always work.
#
# The environment is keyed by the Python version; its packages follow requirements.lock (exact
# pins). When the lock is unchanged a warm run only checks a stamp file and takes well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
CACHE="${PPML_CACHE_DIR:-$HOME/.cache/ppml-operator}"
pyver=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
VENV="$CACHE/venv-py$pyver"
stamp_want=$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)-$(pwd | sha256sum | cut -c1-8)
stamp_file="$VENV/.ppml-stamp"

if [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp_want" && -x "$VENV/bin/python" ]]; then
  ln -sfn "$VENV" .venv
  exit 0
fi

mkdir -p "$CACHE"
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
echo "setup: installing requirements.lock into $VENV (cached wheels make repeat runs fast)" >&2
"$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.lock
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
# setuptools' editable finder runs after the path finder, so from the repo root the bare
# devcluster/ folder would win as a namespace package; plain path entries put the real packages first.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\n' "$PWD/operator/src" "$PWD/runtime/src" "$PWD/devcluster/src" > "$site/ppml-src.pth"
echo "$stamp_want" > "$stamp_file"
ln -sfn "$VENV" .venv
echo "setup: ready (.venv -> $VENV)" >&2
