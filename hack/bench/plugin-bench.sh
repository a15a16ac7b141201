#!/usr/bin/env bash
# Benchmark pv-site-remap against Velero's built-in change-storage-class through Velero's own plugin client code.
#
# Usage: hack/bench/plugin-bench.sh [-n 10000] [-warmup 500] [-spawns 20] [-client-qps 100000] [-log-level info]
# Builds what it needs (velero at VELERO_VERSION, the conformance binary against that Velero, our plugin in release
# mode, unless REPLICADR_PLUGIN_BINARY names a binary to measure), starts a throwaway etcd + kube-apiserver with
# replicadr-testenv and runs `conformance.test bench` in it. Prints a table (ours, built-in, ours/built-in) on stdout.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
require_tools cargo go jq

"${REPO_ROOT}/hack/build-velero-peers.sh"
conformance="$("${REPO_ROOT}/hack/build-conformance.sh" "${VELERO_VERSION}" | awk '{ print $2 }')"
[[ -x "${conformance}" ]] || die "hack/build-conformance.sh built no binary for ${VELERO_VERSION}"

cd "${REPO_ROOT}"
target_dir="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)"
if [[ -z "${REPLICADR_PLUGIN_BINARY:-}" ]]; then
  log "building the plugin in release mode (minutes when cold)"
  cargo build --release -p replicadr-velero-plugins
  REPLICADR_PLUGIN_BINARY="${target_dir}/release/replicadr-velero-plugins"
fi
[[ -x "${REPLICADR_PLUGIN_BINARY}" ]] || die "no plugin binary at ${REPLICADR_PLUGIN_BINARY}"
cargo build --quiet -p replicadr-e2e --bin replicadr-testenv

export REPLICADR_PLUGIN_BINARY REPLICADR_VELERO_BUILTINS
REPLICADR_VELERO_BUILTINS="$(velero_bin)"
export VELERO_NAMESPACE=velero
log "benchmarking ${REPLICADR_PLUGIN_BINARY} against ${REPLICADR_VELERO_BUILTINS} run-plugins"
exec "${target_dir}/debug/replicadr-testenv" -- "${conformance}" bench "$@"
