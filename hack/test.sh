#!/usr/bin/env bash
# Runs every check and test: formatting, lints, docs, unit/property/protocol tests, and the end-to-end tests against real peers.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${REPO_ROOT}"
bash hack/install-tools.sh
require_tools cargo go jq shellcheck pgrep

# The peers (Go and Rust builds, module downloads) are built while the static checks and the
# workspace build run: on a cold cache that keeps both cores busy through the downloads and the
# single-threaded links. Those the Velero lane needs (below) come first; a marker file says they
# are there, so that lane starts while Prometheus, the conformance harnesses and the manifest
# tooling are still building.
peer_log="$(mktemp)"
lane_peers="$(mktemp -u)"
log "building the real test peers in the background (cached in ${REPLICADR_CACHE}; log ${peer_log})"
(
  bash hack/build-kube-peers.sh
  bash hack/build-velero-peers.sh
  bash hack/build-s3-peer.sh
  touch "${lane_peers}"
  bash hack/build-prometheus.sh
  bash hack/build-conformance.sh >/dev/null
  bash hack/validate-manifests.sh
) >"${peer_log}" 2>&1 &
peers=$!
velero=""
static=""
static_log="$(mktemp)"
results=""
other_results=""
# Ends a process and every process it started (a test binary's kube-apiserver, etcd and Velero
# included), children first.
# shellcheck disable=SC2317 # called by the EXIT trap
kill_tree() {
  local child
  for child in $(pgrep -P "$1"); do
    kill_tree "${child}"
  done
  kill "$1" 2>/dev/null || true
}
# A failed static check ends the run: the peer builds and the tests stop with it.
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [[ -n "${peers}" ]]; then kill_tree "${peers}"; fi
  if [[ -n "${velero}" ]]; then kill_tree "${velero}"; fi
  if [[ -n "${static}" ]]; then kill_tree "${static}"; fi
  rm -f "${peer_log}" "${lane_peers}" "${static_log}" "${results}" "${other_results}"
}
trap cleanup EXIT

# Fails the run with the peer builds' log.
peers_failed() {
  cat "${peer_log}" >&2
  die "building the test peers failed (log above)"
}

log "static checks"
find hack -name "*.sh" -print0 | xargs -0 shellcheck -x .ci/run
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
bash hack/lint-images.sh

# The end-to-end tests drive the built binaries, so build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked --no-run
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
log "waiting for the peers of the Velero lane"
while [[ ! -e "${lane_peers}" ]]; do
  kill -0 "${peers}" 2>/dev/null || break
  sleep 2
done
if [[ ! -e "${lane_peers}" ]]; then
  wait "${peers}" || true
  peers_failed
fi
results="$(mktemp)"
other_results="$(mktemp)"
set +e
log "tests: $((${#velero_lane[@]} / 2)) Velero test binaries in one lane (shown as they run); the other lane starts once every peer is built"
# Every test binary runs even when one fails, so one red run shows every failure.
(cargo test -p replicadr-e2e "${velero_lane[@]}" --locked --no-fail-fast 2>&1 | tee "${results}") &
velero=$!
# Proves the images' static musl binaries link and start (its own target directory), while the
# tests wait on their peers; `bash hack/build-images-binaries.sh` alone builds them optimised for
# the images.
(REPLICADR_STATIC_PROFILE=static-check bash hack/build-images-binaries.sh) >"${static_log}" 2>&1 &
static=$!
if ! wait "${peers}"; then
  peers_failed
fi
peers=""
(
  cargo test --workspace --exclude replicadr-e2e --locked --no-fail-fast
  crates=$?
  cargo test -p replicadr-e2e --lib --bins "${other_lane[@]}" --locked --no-fail-fast
  end_to_end=$?
  exit $((crates != 0 ? crates : end_to_end))
) >"${other_results}" 2>&1
other_status=$?
wait "${velero}"
status=$?
velero=""
wait "${static}"
static_status=$?
static=""
set -e
log "the static binaries' check"
cat "${static_log}" >&2
if ((static_status != 0)); then
  log "error: the static image binaries did not build or start (log above)"
  ((status != 0)) || status="${static_status}"
fi
log "the peer builds' log"
cat "${peer_log}" >&2
log "the other lane's output"
cat "${other_results}"
cat "${other_results}" >>"${results}"
((status != 0)) || status="${other_status}"
# One closing line for the whole run: cargo prints a result line per test binary, the last ones
# being empty doc-test runs.
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     END { printf "%d passed, %d failed, %d skipped\n", passed, failed, ignored }' "${results}"
exit "${status}"
