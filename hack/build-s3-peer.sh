#!/usr/bin/env bash
# Builds the pinned S3 server the scheduler's end-to-end tests run on loopback (s3s-fs) into the peer cache.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"


require_tools cargo

bin="${REPLICADR_CACHE}/s3s-fs-${S3S_FS_VERSION}/bin/s3s-fs"
if [[ -x "${bin}" ]] && "${bin}" --help >/dev/null 2>&1; then
  log "s3s-fs ${S3S_FS_VERSION} already built: ${bin}"
  exit 0
fi

root="$(dirname "$(dirname "${bin}")")"
log "building s3s-fs ${S3S_FS_VERSION} into ${root} (about 3 minutes on 2 cores)"
# --locked: the crate's own lockfile, so the build does not drift with new releases of its dependencies.
cargo install "s3s-fs@${S3S_FS_VERSION}" --features binary --locked --root "${root}"
[[ -x "${bin}" ]] || die "cargo install finished but ${bin} is missing"
log "built ${bin}"
