#!/usr/bin/env bash
# Build the pinned kube-apiserver and etcd from their Go modules into the peer cache (no-op when already built).
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat >&2 <<EOF
usage: $(basename "$0") [kube-apiserver|etcd]...

Builds the named peers (default: both) at the versions in hack/versions.env:
  kube-apiserver ${KUBE_VERSION} -> $(kube_apiserver_bin)
  etcd           ${ETCD_VERSION} -> $(etcd_bin)
EOF
}

# A wrapper module per peer lives in the cache, so builds never touch the repository and reruns reuse it.
work_dir() {
  local dir="${REPLICADR_CACHE}/work/$1"
  mkdir -p "${dir}"
  echo "${dir}"
}

# Path of a module's go.mod in the module download cache.
downloaded_go_mod() {
  go mod download -json "$1" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p'
}

# Module paths that a go.mod replaces with directories inside its own repository (`=> ./x` or `=> ../x`).
local_replacements() {
  awk '
    /^replace[[:space:]]*\(/ { in_block = 1; next }
    in_block && /^\)/ { in_block = 0; next }
    {
      line = $0
      sub(/^[[:space:]]+/, "", line)
      if (!in_block && !sub(/^replace[[:space:]]+/, "", line)) next
      n = split(line, f, /[[:space:]]+/)
      for (i = 1; i <= n; i++) if (f[i] == "=>" && f[i + 1] ~ /^\.\.?\//) print f[1]
    }
  ' "$1" | sed '/^$/d' | sort -u
}

# Initialise (or reset) a wrapper module that requires `module@version`.
init_wrapper() {
  local dir="$1" module="$2" version="$3"
  rm -f "${dir}/go.mod" "${dir}/go.sum"
  (cd "${dir}" && go mod init replicadr.local/peer-build >/dev/null 2>&1)
  (cd "${dir}" && go mod edit -require="${module}@${version}")
}

# Build a package of the wrapper module to a temporary file, check that it runs and reports
# `expected_version`, then move it into place.
build_atomically() {
  local dir="$1" pkg="$2" out="$3" ldflags="$4" expected_version="$5"
  local tmp="${out}.tmp.$$"
  mkdir -p "$(dirname "${out}")"
  trap 'rm -f "${tmp}"' EXIT
  (cd "${dir}" && CGO_ENABLED=0 go build -trimpath -ldflags="${ldflags}" -o "${tmp}" "${pkg}")
  local reported
  reported="$("${tmp}" --version)" || die "built ${pkg} does not run: ${tmp}"
  [[ "${reported}" == *"${expected_version}"* ]] \
    || die "built ${pkg} reports '${reported}', expected ${expected_version}"
  mv -f "${tmp}" "${out}"
  trap - EXIT
}

build_kube_apiserver() {
  local out
  out="$(kube_apiserver_bin)"
  if [[ -x "${out}" ]]; then
    log "kube-apiserver ${KUBE_VERSION} already built: ${out}"
    return
  fi
  local started=${SECONDS}
  local dir
  dir="$(work_dir "kube-apiserver-${KUBE_VERSION}")"
  log "building kube-apiserver ${KUBE_VERSION} in ${dir} (cold: 8-15 min on 2 cores)"

  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with in-repo paths,
  # which only work inside its own checkout; point each at its published v0.<minor>.<patch> instead.
  local version="${KUBE_VERSION#v}"
  local major="${version%%.*}"
  local minor_patch="${version#*.}"
  local minor="${minor_patch%%.*}"
  local go_mod
  go_mod="$(downloaded_go_mod "k8s.io/kubernetes@${KUBE_VERSION}")"
  [[ -f "${go_mod}" ]] || die "cannot find go.mod of k8s.io/kubernetes@${KUBE_VERSION}"

  init_wrapper "${dir}" k8s.io/kubernetes "${KUBE_VERSION}"
  local staging count=0
  while read -r staging; do
    [[ "${staging}" == k8s.io/* ]] || die "unexpected local replacement in k8s.io/kubernetes go.mod: ${staging}"
    (cd "${dir}" && go mod edit -replace="${staging}=${staging}@v0.${minor_patch}")
    count=$((count + 1))
  done < <(local_replacements "${go_mod}")
  ((count > 0)) || die "no staging modules found in ${go_mod}"
  log "replaced ${count} staging modules with v0.${minor_patch}"
  (cd "${dir}" && go get "k8s.io/kubernetes/cmd/kube-apiserver@${KUBE_VERSION}")

  # Without these the server reports v0.0.0-master, which clients and feature gates take at face value.
  local build_date
  build_date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "${go_mod%.mod}.info")"
  local ldflags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION}"
    ldflags+=" -X ${pkg}.gitMajor=${major}"
    ldflags+=" -X ${pkg}.gitMinor=${minor}"
    ldflags+=" -X ${pkg}.gitTreeState=archive"
    ldflags+=" -X ${pkg}.buildDate=${build_date}"
  done
  build_atomically "${dir}" k8s.io/kubernetes/cmd/kube-apiserver "${out}" "${ldflags}" "${KUBE_VERSION}"
  log "built $("${out}" --version) in $((SECONDS - started)) s: ${out}"
}

build_etcd() {
  local out
  out="$(etcd_bin)"
  if [[ -x "${out}" ]]; then
    log "etcd ${ETCD_VERSION} already built: ${out}"
    return
  fi
  local started=${SECONDS}
  local dir
  dir="$(work_dir "etcd-${ETCD_VERSION}")"
  log "building etcd ${ETCD_VERSION} in ${dir}"

  # The server module replaces its sibling modules (api, client, pkg) with ../ paths; pin the
  # published ones at the same release instead.
  local go_mod
  go_mod="$(downloaded_go_mod "go.etcd.io/etcd/server/v3@${ETCD_VERSION}")"
  [[ -f "${go_mod}" ]] || die "cannot find go.mod of go.etcd.io/etcd/server/v3@${ETCD_VERSION}"

  init_wrapper "${dir}" go.etcd.io/etcd/server/v3 "${ETCD_VERSION}"
  local sibling
  while read -r sibling; do
    (cd "${dir}" && go mod edit -replace="${sibling}=${sibling}@${ETCD_VERSION}")
  done < <(local_replacements "${go_mod}" | grep '^go\.etcd\.io/etcd/.*/v3$')
  (cd "${dir}" && go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}")

  build_atomically "${dir}" go.etcd.io/etcd/server/v3 "${out}" "-s -w" "${ETCD_VERSION#v}"
  log "built etcd ${ETCD_VERSION} in $((SECONDS - started)) s: ${out}"
}

main() {
  local targets=("$@")
  ((${#targets[@]} > 0)) || targets=(etcd kube-apiserver)
  local target
  for target in "${targets[@]}"; do
    case "${target}" in
      kube-apiserver | etcd) ;;
      -h | --help) usage; exit 0 ;;
      *) usage; die "unknown peer '${target}'" ;;
    esac
  done
  require_tools go awk sed flock
  # Concurrent runs (parallel CI jobs, a test harness) would share the wrapper modules.
  mkdir -p "${REPLICADR_CACHE}/work"
  exec 9>"${REPLICADR_CACHE}/work/build-kube-peers.lock"
  flock 9
  for target in "${targets[@]}"; do
    case "${target}" in
      kube-apiserver) build_kube_apiserver ;;
      etcd) build_etcd ;;
    esac
  done
}

main "$@"
