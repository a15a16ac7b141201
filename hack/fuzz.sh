#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ one after another for the given seconds each (default 60) and prints executions and crashes per target.
#
# Needs a nightly toolchain (libFuzzer's coverage instrumentation) and cargo-fuzz
# (`cargo install cargo-fuzz`). Seeds come from the project's fixtures (fuzz/src/bin/write-seeds.rs);
# the corpus grows in fuzz/corpus/<target>/, crashes land in fuzz/artifacts/<target>/. Each target
# runs on one core, one at a time, so the run stays within a small machine's means.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools cargo rustup awk

seconds="${1:-60}"
[[ "${seconds}" =~ ^[1-9][0-9]*$ ]] || die "seconds per target must be a positive integer, got '${seconds}'"
toolchain="${REPLICADR_FUZZ_TOOLCHAIN:-nightly}"
rustup run "${toolchain}" rustc --version >/dev/null 2>&1 ||
  die "toolchain '${toolchain}' is not installed (rustup toolchain install ${toolchain}, or set REPLICADR_FUZZ_TOOLCHAIN)"
cargo "+${toolchain}" fuzz --version >/dev/null 2>&1 || die "cargo-fuzz is not installed: cargo install cargo-fuzz"

cd "${REPO_ROOT}/fuzz"
targets=(sitemap_parse plugin_config backup_tarball resource_list restore_item_action backup_item_action)

# Seeding needs a second, uninstrumented build of the crate: only when a corpus is missing.
if [[ ! -d corpus/backup_tarball || ! -d corpus/sitemap_parse ]]; then
  log "writing seed corpora from the fixtures"
  cargo run --quiet --locked --bin write-seeds >&2
fi

log "building ${#targets[@]} targets with ${toolchain}"
cargo "+${toolchain}" fuzz build --release >&2

logs="$(mktemp -d)"
trap 'rm -rf "${logs}"' EXIT
status=0
printf '%-22s %14s %10s %8s\n' target executions exec/s crashes
for target in "${targets[@]}"; do
  mkdir -p "corpus/${target}" "artifacts/${target}"
  before="$(find "artifacts/${target}" -type f | wc -l)"
  set +e
  nice -n 10 cargo "+${toolchain}" fuzz run --release "${target}" "corpus/${target}" -- \
    -max_total_time="${seconds}" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
    >"${logs}/${target}.log" 2>&1
  code=$?
  set -e
  after="$(find "artifacts/${target}" -type f | wc -l)"
  executions="$(awk '/stat::number_of_executed_units:/ { print $2 }' "${logs}/${target}.log" | tail -1)"
  rate="$(awk '/stat::average_exec_per_sec:/ { print $2 }' "${logs}/${target}.log" | tail -1)"
  printf '%-22s %14s %10s %8s\n' "${target}" "${executions:-?}" "${rate:-?}" "$((after - before))"
  if [[ "${code}" -ne 0 || "${after}" -ne "${before}" ]]; then
    status=1
    log "${target}: exit ${code}; new artifacts in fuzz/artifacts/${target}/; the end of its log:"
    tail -n 40 "${logs}/${target}.log" >&2
  fi
done
exit "${status}"
