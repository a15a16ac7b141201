#!/usr/bin/env bash
# Installs the pinned kustomize, fetches the schemas of other projects' kinds, and renders every manifests/ kustomization into target/manifests/ (kustomize errors fail here).
#
# The rendered objects are validated by tests/tests/manifests.rs, which hack/test.sh runs with the
# other end-to-end tests: the API server's own schema validation (strict field validation, with the
# Prometheus Operator's real CRDs fetched here from its Go module), a real apply, the scheduler's
# RBAC exercised as its ServiceAccount, plus the checks the API server cannot make (site names,
# site map, namespaces).
# Run it alone with: cargo test -p replicadr-e2e --test manifests
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools go jq
cd "${REPO_ROOT}"

kustomize="${REPLICADR_KUSTOMIZE:-${REPLICADR_CACHE}/kustomize-${KUSTOMIZE_VERSION}/kustomize}"
if [[ ! -x "${kustomize}" ]]; then
  log "installing kustomize ${KUSTOMIZE_VERSION} into $(dirname "${kustomize}")"
  GOBIN="$(dirname "${kustomize}")" go install "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}"
fi

# The Prometheus Operator's CRDs, as its pinned release ships them (example/prometheus-operator-crd/).
crds="${REPLICADR_CACHE}/prometheus-operator-crds-${PROMETHEUS_OPERATOR_VERSION}"
if [[ ! -s "${crds}/servicemonitors.yaml" || ! -s "${crds}/prometheusrules.yaml" ]]; then
  log "fetching the Prometheus Operator ${PROMETHEUS_OPERATOR_VERSION} CRDs from its Go module into ${crds}"
  module="github.com/prometheus-operator/prometheus-operator@${PROMETHEUS_OPERATOR_VERSION}"
  scratch="$(mktemp -d)"
  # go mod download needs a main module to run in; a throwaway one.
  (cd "${scratch}" && go mod init replicadr.invalid/schemas >/dev/null 2>&1 &&
    go mod download -json "${module}") >"${scratch}/download.json" ||
    die "cannot download ${module}: $(cat "${scratch}/download.json")"
  dir="$(jq -r .Dir "${scratch}/download.json")"
  rm -rf "${scratch}" "${crds}"
  mkdir -p "${crds}"
  for kind in servicemonitors prometheusrules; do
    install -m 0644 "${dir}/example/prometheus-operator-crd/monitoring.coreos.com_${kind}.yaml" "${crds}/${kind}.yaml"
  done
fi

out="${REPO_ROOT}/target/manifests"
mkdir -p "${out}"
for dir in base overlays/primary overlays/dr; do
  rendered="${out}/${dir//\//-}.yaml"
  "${kustomize}" build "manifests/${dir}" >"${rendered}"
  log "rendered manifests/${dir}: $(grep -c '^kind:' "${rendered}") objects -> ${rendered#"${REPO_ROOT}"/}"
done
