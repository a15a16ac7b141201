# Shared helpers for hack/ scripts: repository root, pinned versions, the peer cache. Source it, don't run it.
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT
# shellcheck source=hack/versions.env
source "${REPO_ROOT}/hack/versions.env"

# Built peers live outside the repository, keyed by version, so fresh clones and CI reruns reuse them.
REPLICADR_CACHE="${REPLICADR_CACHE:-${HOME}/.cache/replicadr}"
export REPLICADR_CACHE
mkdir -p "${REPLICADR_CACHE}"

export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

# The UTC time on each line lets a CI log be read as a timeline of its steps.
log() { printf '[hack %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf '[hack] error: %s\n' "$*" >&2; exit 1; }

require_tools() {
  local tool
  for tool in "$@"; do
    command -v "${tool}" >/dev/null 2>&1 || die "required tool '${tool}' is not on PATH"
  done
}

# Where each built peer lives. The Rust test harness (tests/) derives the same paths from versions.env.
kube_apiserver_bin() { echo "${REPLICADR_CACHE}/kube-apiserver-${KUBE_VERSION}/kube-apiserver"; }
etcd_bin() { echo "${REPLICADR_CACHE}/etcd-${ETCD_VERSION}/etcd"; }
velero_bin() { echo "${REPLICADR_CACHE}/velero-${VELERO_VERSION}/velero"; }
velero_plugin_for_aws_bin() { echo "${REPLICADR_CACHE}/velero-plugin-for-aws-${VELERO_PLUGIN_FOR_AWS_VERSION}/velero-plugin-for-aws"; }
prometheus_bin() { echo "${REPLICADR_CACHE}/prometheus-${PROMETHEUS_VERSION}/prometheus"; }
promtool_bin() { echo "${REPLICADR_CACHE}/prometheus-${PROMETHEUS_VERSION}/promtool"; }
