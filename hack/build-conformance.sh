#!/usr/bin/env bash
# Build the Go conformance harness (tests/conformance) once per Velero client version, into the peer cache.
#
# Usage: hack/build-conformance.sh [VELERO_VERSION...]   (default: every version in VELERO_CLIENT_VERSIONS)
#
# tests/conformance holds the only copy of the sources and no go.mod. For each version V this script generates a
# module that requires github.com/vmware-tanzu/velero@V with velero's own replace directives, copies the sources in,
# runs `go mod tidy` and `go test -c`. Paths, for each V:
#   $REPLICADR_CACHE/conformance-<V>-<hash>/conformance.test   the test binary; <hash> = first 12 hex digits of the
#                                                               sha256 of tests/conformance/*.go and this script, so
#                                                               an edit builds anew and old builds stay valid
#   $REPLICADR_CACHE/conformance-<V>.test                       symlink to the binary last built for V
# stdout: one line "<V> <absolute path of conformance.test>" per version, nothing else; progress goes to stderr.
# Already built binaries are reused, so running this before every test run costs a second.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=hack/lib-velero.sh
source "${REPO_ROOT}/hack/lib-velero.sh"
require_tools go jq sha256sum

SOURCES_DIR="${REPO_ROOT}/tests/conformance"

sources_hash() {
  (
    cd "${SOURCES_DIR}"
    for f in *.go; do
      printf '%s\n' "${f}"
      cat "${f}"
    done
    cat "${REPO_ROOT}/hack/build-conformance.sh" "${REPO_ROOT}/hack/lib-velero.sh"
  ) | sha256sum | cut -c1-12
}

build_conformance() {
  local version="$1" hash="$2" dir started
  dir="${REPLICADR_CACHE}/conformance-${version}-${hash}"
  if [[ ! -x "${dir}/conformance.test" ]]; then
    started="$(date +%s)"
    log "conformance against velero ${version}: building in ${dir}"
    rm -rf "${dir}"
    mkdir -p "${dir}"
    (
      cd "${dir}"
      init_velero_wrapper_module replicadr.local/conformance "${version}"
      cp "${SOURCES_DIR}"/*.go .
      go_resolving_unavailable go mod tidy
      go test -c -o conformance.test.tmp -ldflags "-X replicadr.local/conformance.veleroClientVersionStamp=${version}" .
      mv -f conformance.test.tmp conformance.test
    )
    log "conformance against velero ${version}: built in $(($(date +%s) - started)) s"
    # Builds of other sources are ~100 MB each. Drop those untouched for an hour; younger ones may belong to
    # another checkout or worktree that is building or testing right now.
    find "${REPLICADR_CACHE}" -maxdepth 1 -type d -name "conformance-${version}-*" ! -path "${dir}" -mmin +60 \
      -exec rm -rf {} +
  fi
  ln -sfn "${dir}/conformance.test" "${REPLICADR_CACHE}/conformance-${version}.test"
  printf '%s %s\n' "${version}" "${dir}/conformance.test"
}

main() {
  local versions hash version
  if (($# > 0)); then
    versions=("$@")
  else
    read -r -a versions <<<"${VELERO_CLIENT_VERSIONS}"
  fi
  compgen -G "${SOURCES_DIR}/*.go" >/dev/null || die "no Go sources in ${SOURCES_DIR}"
  hash="$(sources_hash)"
  for version in "${versions[@]}"; do
    build_conformance "${version}" "${hash}"
  done
}

main "$@"
