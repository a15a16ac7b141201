#!/usr/bin/env bash
# Shows the plugins as Velero runs them: Velero's own plugin client drives them against a real kube-apiserver.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools cargo go jq
cd "${REPO_ROOT}"

log "building the peers this needs (cached in ${REPLICADR_CACHE}; about 25 minutes the first time on 2 cores)"
bash hack/build-kube-peers.sh
bash hack/build-velero-peers.sh
cargo build --locked -p replicadr-velero-plugins
cargo test --locked -p replicadr-e2e --test conformance -- --nocapture
