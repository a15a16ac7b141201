#!/usr/bin/env bash
# Build the pinned Velero server binary and velero-plugin-for-aws into the peer cache (skips what is already built).
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=hack/lib-velero.sh
source "${REPO_ROOT}/hack/lib-velero.sh"
require_tools go jq

# Build main package `pkg` of module@version into `out` from a wrapper module in the cache that requires the module
# and repeats its replace directives. velero's go.mod replaces kopia with a fork, so `go install …@version` is refused
# for it; velero-plugin-for-aws has no replaces and would `go install`, but goes the same way so that versions missing
# from the module proxy can be bumped (go_resolving_unavailable). Selected versions are those of upstream's own build.
build_go_binary() {
  local name="$1" module="$2" version="$3" pkg="$4" out="$5" ldflags="${6:-}" work
  if [[ -x "${out}" ]]; then
    log "${name} ${version}: cached at ${out}"
    return
  fi
  work="${REPLICADR_CACHE}/build/${name}-${version}"
  rm -rf "${work}"
  mkdir -p "${work}" "$(dirname "${out}")"
  log "${name} ${version}: building in ${work} (minutes on a cold module cache)"
  (
    cd "${work}"
    go mod init "replicadr.local/${name}-peer" >/dev/null 2>&1
    copy_module_replaces "${module}" "${version}"
    go mod edit -require "${module}@${version}"
    go_resolving_unavailable go get "${pkg}@${version}"
    CGO_ENABLED=0 go build -trimpath -ldflags "${ldflags}" -o "${out}.tmp" "${pkg}"
  )
  mv -f "${out}.tmp" "${out}"
  log "${name} ${version}: built ${out}"
}

buildinfo=github.com/vmware-tanzu/velero/pkg/buildinfo
# No VCS metadata comes with a proxied module, so the commit stays empty; ImageRegistry is upstream's default.
build_go_binary velero github.com/vmware-tanzu/velero "${VELERO_VERSION}" \
  github.com/vmware-tanzu/velero/cmd/velero "$(velero_bin)" \
  "-X ${buildinfo}.Version=${VELERO_VERSION} -X ${buildinfo}.ImageRegistry=velero -X ${buildinfo}.GitTreeState=clean"
build_go_binary velero-plugin-for-aws github.com/vmware-tanzu/velero-plugin-for-aws "${VELERO_PLUGIN_FOR_AWS_VERSION}" \
  github.com/vmware-tanzu/velero-plugin-for-aws/velero-plugin-for-aws "$(velero_plugin_for_aws_bin)"
"$(velero_bin)" version --client-only >&2
