#!/usr/bin/env bash
# Benchmark a large failover: the drill with many VMs (default 500, two NFS PVs each: 1,000 PVs plus the fixed
# workload), release build, failover only, three times on this machine:
#   1. cold, Velero's client limits as the shipped installs set them (100 QPS / 200 burst): the RTO breakdown
#      (plan, restore, PV binding, VM start), the restore's items/s, and the share of the restore spent inside
#      the ReplicaDR plugins (their own Execute timing, summed from Velero's log);
#   2. cold, Velero's own default client limits (20 QPS / 30 burst): the restore's items/s;
#   3. from a warm standby at dr (BackupPolicy spec.standby): the standby's first refresh, its refresh after a
#      second backup of the unchanged workload, and the failover from it; the ratio of the cold failover to it.
#
# Usage: hack/bench/drill-bench.sh [vms] [runs: all|cold|standby]
# Not a timed test: it fails only if a drill does.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
require_tools cargo jq

vms="${1:-500}"
[[ "${vms}" =~ ^[0-9]+$ ]] || die "vms must be a number, got '${vms}'"

cd "${REPO_ROOT}"
bash hack/build-kube-peers.sh
bash hack/build-velero-peers.sh
bash hack/build-s3-peer.sh
cargo build --quiet --locked --release -p replicadr-velero-plugins -p replicadr-drill
target="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release"

runs="${2:-all}"
reports="$(mktemp -d)"
trap 'rm -rf "${reports}"' EXIT

# drill <name> <args...>: one drill into ${reports}/<name>.json; prints the drill process's own peak RSS (VmHWM
# never decreases, so the last reading before it exits is its peak; kube-apiserver, etcd and Velero, which it
# starts, are not counted).
drill() {
  local name="$1"
  shift
  log "drill '${name}' with ${vms} more VMs (this takes minutes)"
  "${target}/replicadr-drill" --no-failback --vms "${vms}" \
    --plugin-binary "${target}/replicadr-velero-plugins" -o json "$@" >"${reports}/${name}.json" &
  local pid=$! peak_kib=0 hwm
  while kill -0 "${pid}" 2>/dev/null; do
    hwm="$(awk '/^VmHWM:/ { print $2 }' "/proc/${pid}/status" 2>/dev/null || true)"
    [[ -n "${hwm}" ]] && peak_kib="${hwm}"
    sleep 0.5
  done
  wait "${pid}" || {
    cat "${reports}/${name}.json" >&2
    die "the drill '${name}' failed"
  }
  echo "$((peak_kib / 1024))" >"${reports}/${name}.rss"
}

# The main policy's failover report of one drill.
failover='(.failover.reports[] | select(.policy == "drill"))'
# shellcheck disable=SC2016 # jq programs, spliced into the ones below
breakdown='
  "RTO breakdown (seconds):",
  ($f.phases[] | "  \(.name | . + "            " | .[0:12]) \(.seconds * 10 | round / 10)"),
  "  total        \($f.totalSeconds * 10 | round / 10)"'
# shellcheck disable=SC2016
restore_rate='([$f.phases[] | select(.name == "restore") | .seconds] | add) as $s |
  "\($f.restoreItems) items in \($s * 10 | round / 10) s = \($f.restoreItems / $s * 10 | round / 10) items/s"'

if [[ "${runs}" == all || "${runs}" == cold ]]; then
  drill cold
  echo "== 1. cold failover, Velero client 100 QPS / 200 burst (the shipped installs)"
  jq -r "${failover} as \$f |
    \"VMs started:          \(\$f.vmStarts | length)\",
    \"PVs rewritten:        \(\$f.rewritten | length)\",
    \"RPO achieved:         \(\$f.rpoAchievedSeconds) s\",
    \"Restore:              \" + (${restore_rate}),
    ${breakdown},
    \"\",
    \"Backup + verification at primary: \(.backupSeconds * 10 | round / 10) s\",
    (if .pluginTime then
      \"ReplicaDR plugins in the restore: \(.pluginTime.calls) Execute calls, \(.pluginTime.executeSeconds * 1000 | round) ms of \(.pluginTime.restoreSeconds * 10 | round / 10) s = \(.pluginTime.share * 10000 | round / 100) % (goal < 5 %)\"
     else \"ReplicaDR plugins in the restore: no timing found in Velero's log\" end),
    \"Drill passed: \(.checks | all(.passed))\"
  " "${reports}/cold.json"
  echo "Peak RSS of the replicadr-drill process (driver, played controllers, TLS listener): $(cat "${reports}/cold.rss") MiB"

  drill cold-default-client --velero-client-qps 20 --velero-client-burst 30
  echo
  echo "== 2. cold failover, Velero's default client limits (20 QPS / 30 burst)"
  jq -r "${failover} as \$f | \"Restore:              \" + (${restore_rate}), \"  failover total \(\$f.totalSeconds * 10 | round / 10) s\"" \
    "${reports}/cold-default-client.json"
  jq -rn --slurpfile shipped "${reports}/cold.json" --slurpfile default "${reports}/cold-default-client.json" "
    def rate(r): (r.failover.reports[] | select(.policy == \"drill\")) as \$f
      | \$f.restoreItems / ([\$f.phases[] | select(.name == \"restore\") | .seconds] | add);
    \"Restore items/s, shipped / Velero default: \(rate(\$shipped[0]) / rate(\$default[0]) * 100 | round / 100)x\""
fi

if [[ "${runs}" == all || "${runs}" == standby ]]; then
  drill standby --standby
  echo
  echo "== 3. failover from a warm standby at dr"
  jq -r "
    \"Standby, first refresh:      \(.standby.first.items) items in \(.standby.first.seconds * 10 | round / 10) s (\(.standby.first.items / .standby.first.seconds * 10 | round / 10) items/s)\",
    \"Standby, unchanged refresh:  \(.standby.unchanged.items) items in \(.standby.unchanged.seconds * 10 | round / 10) s (a second backup of the unchanged workload)\",
    (${failover} as \$f |
      \"Standby used:                Restore \(\$f.standby.restore), backup \(\$f.standby.backup), \(\$f.standby.lagSeconds) s old at the failover\",
      \"VMs started:                 \(\$f.vmStarts | length)\",
      ${breakdown}),
    \"Drill passed: \(.checks | all(.passed))\"
  " "${reports}/standby.json"
  if [[ -e "${reports}/cold.json" ]]; then
    jq -rn --slurpfile cold "${reports}/cold.json" --slurpfile standby "${reports}/standby.json" "
      def total(r): (r.failover.reports[] | select(.policy == \"drill\")).totalSeconds;
      \"Failover, cold / from the standby: \(total(\$cold[0]) * 10 | round / 10) s / \(total(\$standby[0]) * 10 | round / 10) s = \(total(\$cold[0]) / total(\$standby[0]) * 10 | round / 10)x (goal: standby <= 15 s, >= 15x)\""
  fi
fi
