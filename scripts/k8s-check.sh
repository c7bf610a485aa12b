#!/usr/bin/env bash
# The Kubernetes manifests, offline (deploy/k8s/test_manifests.py): both
# overlays built with `kubectl kustomize`, built-in kinds through
# `kubernetes-validate --strict` for Kubernetes 1.32, operator objects
# against their vendored CRD schemas, and the deployment's properties.
# A few seconds. Needs kubectl (with its kustomize) and Python 3; the
# Python packages (deploy/k8s/requirements.txt, pinned) go into a
# virtualenv of their own under ~/.cache, made once and kept while the
# requirements file is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

kubectl=${KUBECTL:-kubectl}
if ! command -v "$kubectl" >/dev/null; then
  echo "k8s-check: kubectl not found. These checks need kubectl 1.27 or newer (its built-in" >&2
  echo "kustomize builds the overlays): install it from your distribution or the Kubernetes" >&2
  echo "project's package repository (this project's machine image has /usr/bin/kubectl 1.32)," >&2
  echo "or set KUBECTL=/path/to/kubectl." >&2
  exit 1
fi

requirements=deploy/k8s/requirements.txt
venv=${K8S_CHECK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ticketing/k8s-check-venv}
stamp="$venv/requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "k8s-check: installing $requirements into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$requirements"
  echo "$want" > "$stamp"
fi

PYTHONDONTWRITEBYTECODE=1 KUBECTL="$kubectl" "$venv/bin/python" -m unittest deploy/k8s/test_manifests.py "$@"
