#!/usr/bin/env bash
# Runs every check and test: formatting, lints, docs, unit/property/protocol tests, and the end-to-end tests against real peers.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${REPO_ROOT}"
bash hack/install-tools.sh
require_tools cargo go jq shellcheck pgrep unshare ip

# The peers (Go and Rust builds, module downloads) are built while the static checks and the
# workspace build run: on a cold cache that keeps both cores busy through the downloads and the
# single-threaded links. Those most tests need (etcd, kube-apiserver, Velero, its AWS plugin,
# s3s-fs) come first; a marker file says they are there, so those tests start while Prometheus, the
# conformance harnesses and the manifest tooling are still building; two more markers say when
# Prometheus, and then every peer, is there too.
peer_log="$(mktemp)"
early_peers="$(mktemp -u)"
prometheus_peers="$(mktemp -u)"
all_peers="$(mktemp -u)"
log "building the real test peers in the background (cached in ${REPLICADR_CACHE}; log ${peer_log})"
(
  bash hack/build-kube-peers.sh
  bash hack/build-velero-peers.sh
  bash hack/build-s3-peer.sh
  touch "${early_peers}"
  bash hack/build-prometheus.sh
  touch "${prometheus_peers}"
  bash hack/build-conformance.sh >/dev/null
  bash hack/validate-manifests.sh
  touch "${all_peers}"
) >"${peer_log}" 2>&1 &
peers=$!
tests=""
static=""
static_log="$(mktemp)"
results=""
# Ends a process and every process it started (a test binary's kube-apiserver, etcd and Velero
# included), the process first, so that it starts nothing more (the test pool shows what it
# stopped), then what it had started.
# shellcheck disable=SC2317 # called by the EXIT trap
kill_tree() {
  local children child
  children="$(pgrep -P "$1")"
  kill "$1" 2>/dev/null || true
  for child in ${children}; do
    kill_tree "${child}"
  done
}
# A failed static check ends the run: the peer builds and the tests stop with it.
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [[ -n "${peers}" ]]; then kill_tree "${peers}"; fi
  if [[ -n "${tests}" ]]; then kill_tree "${tests}"; fi
  if [[ -n "${static}" ]]; then kill_tree "${static}"; fi
  rm -f "${peer_log}" "${early_peers}" "${prometheus_peers}" "${all_peers}" "${static_log}" "${results}"
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
# The crates' own tests run without the end-to-end crate, whose dependencies turn on more features:
# built here too, so that the jobs below find everything built and never wait on cargo's lock.
cargo test --workspace --exclude replicadr-e2e --locked --no-run
# The tests run as a pool of jobs side by side, each in a network namespace of its own
# (hack/test-pool.sh): every end-to-end test file is a job, and every other crate's tests one more.
# Jobs start once the peers they need are built: those that need the conformance harnesses or
# kustomize (a file that mentions `conformance` or `kustomize`) once every peer is; those that
# need Prometheus (mentioning `lab::prometheus`) once it is; the others once the first peers are,
# those that start a Velero server (mentioning `VeleroServer`, `start_velero`,
# `sites_with_workload`, `drill::run` or `lab_cli::`) first, as they are the longest. Each file
# lands in exactly one group, so a new test is never left out.
velero_jobs=()
other_jobs=()
prometheus_jobs=()
late_jobs=()
for file in tests/tests/*.rs; do
  name="$(basename "${file}" .rs)"
  if grep -qE 'conformance|kustomize' "${file}"; then
    late_jobs+=("${name}")
  elif grep -qE 'lab::prometheus' "${file}"; then
    prometheus_jobs+=("${name}")
  elif grep -qE 'VeleroServer|start_velero|sites_with_workload|drill::run|lab_cli::' "${file}"; then
    velero_jobs+=("${name}")
  else
    other_jobs+=("${name}")
  fi
done
log "waiting for the peers most tests need"
while [[ ! -e "${early_peers}" ]]; do
  kill -0 "${peers}" 2>/dev/null || break
  sleep 2
done
if [[ ! -e "${early_peers}" ]]; then
  wait "${peers}" || true
  peers_failed
fi
results="$(mktemp)"
set +e
# Every job runs even when one fails, so one red run shows every failure.
(bash hack/test-pool.sh "${velero_jobs[@]}" "${other_jobs[@]}" crates \
  "after:${prometheus_peers}" "${prometheus_jobs[@]}" "after:${all_peers}" "${late_jobs[@]}" 2>&1 |
  tee "${results}") &
tests=$!
# Proves the images' static musl binaries link and start (its own target directory), while the
# tests wait on their peers; `bash hack/build-images-binaries.sh` alone builds them optimised for
# the images.
(REPLICADR_STATIC_PROFILE=static-check bash hack/build-images-binaries.sh) >"${static_log}" 2>&1 &
static=$!
if ! wait "${peers}"; then
  peers_failed
fi
peers=""
wait "${tests}"
status=$?
tests=""
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
# One closing line for the whole run: cargo prints a result line per test binary, the last ones
# being empty doc-test runs. A job can fail with no result line (it did not build, or crashed):
# those are counted too.
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     /^\[hack [0-9:]+\] test job .*, exit [1-9]/ { jobs += 1 }
     END {
       printf "%d passed, %d failed, %d skipped", passed, failed, ignored
       if (jobs) printf " (test jobs failed: %d)", jobs
       printf "\n"
     }' "${results}"
exit "${status}"
