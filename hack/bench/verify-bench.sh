#!/usr/bin/env bash
# Benchmark backup verification: streams a synthetic Velero backup tarball through the verifier and compares with gzip|tar.
#
# Usage: hack/bench/verify-bench.sh [items]   (default 100000)
# Generates a backup of `items` items (VMs with PVCs and NFS PVs, the rest ConfigMaps) in Velero's layout under a
# temporary directory, then measures the verifier's pass (decompressed MB/s, peak RSS) and, on the same file in the
# same run, `gzip -dc | tar -t` as a reference. Prints a table on stdout. Not a timed test: it fails only if a tool does.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
require_tools cargo jq gzip tar

items="${1:-100000}"
[[ "${items}" =~ ^[0-9]+$ ]] || die "items must be a number, got '${items}'"

cd "${REPO_ROOT}"
target_dir="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)"
log "building the benchmark in release mode (minutes when cold)"
cargo build --quiet --release -p replicadr-scheduler --example verify_bench
bench="${target_dir}/release/examples/verify_bench"

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
tarball="${work}/bench.tar.gz"
log "generating ${items} items"
"${bench}" generate "${items}" "${tarball}"

log "verifying (3 runs, best kept)"
best=""
for _ in 1 2 3; do
  run="$("${bench}" verify "${tarball}" "${tarball}.resource-list.json.gz")"
  if [[ -z "${best}" ]] || jq -e --argjson best "${best}" '.seconds < $best.seconds' <<<"${run}" >/dev/null; then
    best="${run}"
  fi
done
[[ "$(jq -r .findings <<<"${best}")" == 0 ]] || die "the synthetic backup failed verification: ${best}"

log "reference: gzip -dc | tar -t (3 runs, best kept)"
ref_best=""
for _ in 1 2 3; do
  start="$(date +%s.%N)"
  gzip -dc "${tarball}" | tar -t >/dev/null
  end="$(date +%s.%N)"
  seconds="$(jq -n "${end} - ${start}")"
  if [[ -z "${ref_best}" ]] || jq -en "${seconds} < ${ref_best}" >/dev/null; then
    ref_best="${seconds}"
  fi
done

uncompressed="$(jq -r .uncompressedBytes <<<"${best}")"
verify_s="$(jq -r .seconds <<<"${best}")"
jq -rn \
  --argjson run "${best}" \
  --argjson ref "${ref_best}" \
  --argjson bytes "${uncompressed}" \
  --argjson verify "${verify_s}" '
  def f: . * 10 | round / 10;
  ["", "items", "tar MB", "seconds", "MB/s", "peak RSS MB"],
  ["replicadr verify", $run.items, ($bytes / 1e6 | f), ($verify * 100 | round / 100), ($bytes / 1e6 / $verify | f), ($run.peakRssKiB / 1024 | f)],
  ["gzip -dc | tar -t", "", ($bytes / 1e6 | f), ($ref * 100 | round / 100), ($bytes / 1e6 / $ref | f), ""],
  ["ratio (ours/reference throughput)", "", "", "", (($bytes / $verify) / ($bytes / $ref) * 100 | round / 100), ""]
  | @tsv' | column -t -s $'\t'
