#!/usr/bin/env bash
# Benchmark a large failover: the drill with many VMs (default 500, two NFS PVs each: 1,000 PVs plus the fixed
# workload), release build, failover only. Prints the RTO breakdown of the failover (plan, restore, PV binding, VM
# start) and the share of the restore spent inside the ReplicaDR plugins (their own Execute timing, summed from
# Velero's log) against the whole restore measured in the same run.
#
# Usage: hack/bench/drill-bench.sh [vms]
# Not a timed test: it fails only if the drill does.
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

report="$(mktemp)"
trap 'rm -f "${report}"' EXIT
log "drill with ${vms} more VMs (this takes minutes)"
"${target}/replicadr-drill" --no-failback --vms "${vms}" \
  --plugin-binary "${target}/replicadr-velero-plugins" -o json >"${report}" &
drill=$!
# The drill process's own peak RSS: VmHWM never decreases, so the last reading before it exits is
# its peak (the children it starts, kube-apiserver, etcd and Velero, are not counted).
peak_kib=0
while kill -0 "${drill}" 2>/dev/null; do
  hwm="$(awk '/^VmHWM:/ { print $2 }' "/proc/${drill}/status" 2>/dev/null || true)"
  [[ -n "${hwm}" ]] && peak_kib="${hwm}"
  sleep 0.5
done
wait "${drill}" || {
  cat "${report}" >&2
  die "the drill failed"
}

jq -r '
  (.failover.reports[] | select(.policy == "drill")) as $f |
  "VMs started:          \($f.vmStarts | length)",
  "PVs rewritten:        \($f.rewritten | length)",
  "RPO achieved:         \($f.rpoAchievedSeconds) s",
  "",
  "RTO breakdown (seconds):",
  ($f.phases[] | "  \(.name | . + "            " | .[0:12]) \(.seconds * 10 | round / 10)"),
  "  total        \($f.totalSeconds * 10 | round / 10)",
  "",
  "Backup + verification at primary: \(.backupSeconds * 10 | round / 10) s",
  (if .pluginTime then
    "ReplicaDR plugins in the restore: \(.pluginTime.calls) Execute calls, \(.pluginTime.executeSeconds * 1000 | round) ms of \(.pluginTime.restoreSeconds * 10 | round / 10) s = \(.pluginTime.share * 10000 | round / 100) % (goal < 5 %)"
   else "ReplicaDR plugins in the restore: no timing found in Velero'"'"'s log" end),
  "Drill passed: \(.checks | all(.passed))"
' "${report}"
echo "Peak RSS of the replicadr-drill process (driver, played controllers, TLS listener): $((peak_kib / 1024)) MiB"
