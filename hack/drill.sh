#!/usr/bin/env bash
# The main job on its embedded default: a complete two-site DR drill on this machine. Builds and caches
# the real peers it runs (kube-apiserver, etcd, Velero, velero-plugin-for-aws, an S3 server), builds
# ReplicaDR, then runs `replicadr-drill` with any arguments given (e.g. --keep, --vms 500, -o json).
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${REPO_ROOT}"
bash hack/install-tools.sh jq
require_tools cargo go jq

log "building the peers the drill runs (cached in ${REPLICADR_CACHE}; about 30 minutes the first time on 2 cores)"
bash hack/build-kube-peers.sh
bash hack/build-velero-peers.sh
bash hack/build-s3-peer.sh
cargo build --locked --release -p replicadr-velero-plugins -p replicadr-drill
target="${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/release"
exec "${target}/replicadr-drill" --plugin-binary "${target}/replicadr-velero-plugins" "$@"
