#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ one after another for the given seconds each (default 60) and prints executions and crashes per target.
#
# Usage: hack/fuzz.sh [seconds] [executions]. With executions (e.g. 1000000) each target stops at
# that many executions or at the seconds, whichever comes first. REPLICADR_FUZZ_TARGETS (names
# separated by spaces) runs only those targets, so two shells can share the work of two cores.
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
executions="${2:-0}"
[[ "${executions}" =~ ^[0-9]+$ ]] || die "executions per target must be a whole number (0: no limit), got '${executions}'"
toolchain="${REPLICADR_FUZZ_TOOLCHAIN:-nightly}"
rustup run "${toolchain}" rustc --version >/dev/null 2>&1 ||
  die "toolchain '${toolchain}' is not installed (rustup toolchain install ${toolchain}, or set REPLICADR_FUZZ_TOOLCHAIN)"
cargo "+${toolchain}" fuzz --version >/dev/null 2>&1 || die "cargo-fuzz is not installed: cargo install cargo-fuzz"

cd "${REPO_ROOT}/fuzz"
all_targets=(sitemap_parse plugin_config backup_tarball resource_list restore_item_action backup_item_action)
read -r -a targets <<<"${REPLICADR_FUZZ_TARGETS:-${all_targets[*]}}"
for target in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" ${target} "* ]] || die "REPLICADR_FUZZ_TARGETS names '${target}'; the targets are: ${all_targets[*]}"
done

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
    -max_total_time="${seconds}" -runs="$((executions > 0 ? executions : -1))" \
    -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
    >"${logs}/${target}.log" 2>&1
  code=$?
  set -e
  after="$(find "artifacts/${target}" -type f | wc -l)"
  executed="$(awk '/stat::number_of_executed_units:/ { print $2 }' "${logs}/${target}.log" | tail -1)"
  rate="$(awk '/stat::average_exec_per_sec:/ { print $2 }' "${logs}/${target}.log" | tail -1)"
  printf '%-22s %14s %10s %8s\n' "${target}" "${executed:-?}" "${rate:-?}" "$((after - before))"
  if [[ "${code}" -ne 0 || "${after}" -ne "${before}" ]]; then
    status=1
    log "${target}: exit ${code}; new artifacts in fuzz/artifacts/${target}/; the end of its log:"
    tail -n 40 "${logs}/${target}.log" >&2
  fi
done
exit "${status}"
