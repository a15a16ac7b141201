#!/usr/bin/env bash
# Runs every check and test: formatting, lints, docs, unit/property/protocol tests, and the end-to-end tests against real peers.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${REPO_ROOT}"
bash hack/install-tools.sh
require_tools cargo go jq shellcheck

# The peers (Go and Rust builds, module downloads) are built while the static checks and the
# workspace build run: on a cold cache that keeps both cores busy through the downloads and the
# single-threaded links.
peer_log="$(mktemp)"
log "building the real test peers in the background (cached in ${REPLICADR_CACHE}; log ${peer_log})"
(
  bash hack/build-kube-peers.sh
  bash hack/build-velero-peers.sh
  bash hack/build-s3-peer.sh
  bash hack/build-prometheus.sh
  bash hack/build-conformance.sh >/dev/null
  bash hack/validate-manifests.sh
) >"${peer_log}" 2>&1 &
peers=$!
results=""
# A failed static check ends the run: the peer builds stop with it.
trap 'pkill -P "${peers}" 2>/dev/null || true; kill "${peers}" 2>/dev/null || true; rm -f "${peer_log}" "${results}"' EXIT

log "static checks"
find hack -name "*.sh" -print0 | xargs -0 shellcheck -x .ci/run
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
bash hack/lint-images.sh
# Proves the images' static musl binaries link and start; `bash hack/build-images-binaries.sh` alone
# builds them optimised for the images.
REPLICADR_STATIC_PROFILE=static-check bash hack/build-images-binaries.sh

# The end-to-end tests drive the built binaries, so build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked --no-run
log "waiting for the test peers"
if ! wait "${peers}"; then
  cat "${peer_log}" >&2
  die "building the test peers failed (log above)"
fi
cat "${peer_log}" >&2

# Two lanes run side by side, since most of a test's time is spent waiting on its peers: the
# end-to-end test binaries that start a Velero server, one after another (Velero's controller
# manager always binds port 8080), and every other test. Each file under tests/tests lands in
# exactly one lane, so a new test is never left out.
velero_lane=()
other_lane=()
for file in tests/tests/*.rs; do
  name="$(basename "${file}" .rs)"
  if grep -qE 'VeleroServer|start_velero|sites_with_workload|drill::run|lab_cli::' "${file}"; then
    velero_lane+=(--test "${name}")
  else
    other_lane+=(--test "${name}")
  fi
done
log "tests: ${#velero_lane[@]} Velero test binaries in one lane, the rest beside them"
results="$(mktemp)"
other_results="$(mktemp)"
set +e
# Every test binary runs even when one fails, so one red run shows every failure.
(
  cargo test --workspace --exclude replicadr-e2e --locked --no-fail-fast
  crates=$?
  cargo test -p replicadr-e2e --lib --bins "${other_lane[@]}" --locked --no-fail-fast
  end_to_end=$?
  exit $((crates != 0 ? crates : end_to_end))
) >"${other_results}" 2>&1 &
others=$!
cargo test -p replicadr-e2e "${velero_lane[@]}" --locked --no-fail-fast 2>&1 | tee "${results}"
status="${PIPESTATUS[0]}"
wait "${others}"
other_status=$?
set -e
log "the other lane's output"
cat "${other_results}"
cat "${other_results}" >>"${results}"
rm -f "${other_results}"
((status != 0)) || status="${other_status}"
# One closing line for the whole run: cargo prints a result line per test binary, the last ones
# being empty doc-test runs.
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     END { printf "%d passed, %d failed, %d skipped\n", passed, failed, ignored }' "${results}"
exit "${status}"
