#!/usr/bin/env bash
# Runs the site map's property tests with many cases per property (default 100000; first argument overrides).
#
# CI runs the same tests with PROPTEST_CASES unset (64 cases each); this is the long run, built
# with optimisations so 100,000 cases per property take minutes, not hours.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools cargo
cd "${REPO_ROOT}"

cases="${1:-100000}"
[[ "${cases}" =~ ^[1-9][0-9]*$ ]] || die "cases must be a positive integer, got '${cases}'"
log "site map properties, ${cases} cases each"
started="${SECONDS}"
PROPTEST_CASES="${cases}" cargo test --release --locked -p replicadr-core --test sitemap_properties -- --test-threads 1
log "done in $((SECONDS - started)) s"
