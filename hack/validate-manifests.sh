#!/usr/bin/env bash
# Installs the pinned kustomize and renders every manifests/ kustomization into target/manifests/ (kustomize errors fail here).
#
# The rendered objects are validated by tests/tests/manifests.rs, which hack/test.sh runs with the
# other end-to-end tests: a server-side dry run with strict field validation against the real
# kube-apiserver, plus the checks the API server cannot make (site names, site map, namespaces).
# Run it alone with: cargo test -p replicadr-e2e --test manifests
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools go
cd "${REPO_ROOT}"

kustomize="${REPLICADR_KUSTOMIZE:-${REPLICADR_CACHE}/kustomize-${KUSTOMIZE_VERSION}/kustomize}"
if [[ ! -x "${kustomize}" ]]; then
  log "installing kustomize ${KUSTOMIZE_VERSION} into $(dirname "${kustomize}")"
  GOBIN="$(dirname "${kustomize}")" go install "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}"
fi

out="${REPO_ROOT}/target/manifests"
mkdir -p "${out}"
for dir in base overlays/primary overlays/dr; do
  rendered="${out}/${dir//\//-}.yaml"
  "${kustomize}" build "manifests/${dir}" >"${rendered}"
  log "rendered manifests/${dir}: $(grep -c '^kind:' "${rendered}") objects -> ${rendered#"${REPO_ROOT}"/}"
done
