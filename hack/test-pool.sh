#!/usr/bin/env bash
# Runs the workspace's tests as a pool of jobs, several side by side, each in a network namespace of
# its own.
#
# Usage: test-pool.sh JOB... [after:FILE JOB...]
#   JOB           the name of an end-to-end test file under tests/tests, or `crates`: every other
#                 crate's own tests and the end-to-end crate's library tests
#   after:FILE    the jobs after it start only once FILE exists (their peers are still building);
#                 the files must come to exist in the order given, and the pool waits for them
#
# Most of an end-to-end test's time is spent waiting on its peers, so several run at once:
# REPLICADR_TEST_JOBS of them (default 3). Velero's controller manager always binds port 8080, so
# two Velero servers cannot share a network: in a namespace of its own a job sees only its own
# loopback, and every peer it starts (etcd, kube-apiserver, s3s-fs, Velero, Prometheus, the
# plugins) runs there with it. Where the machine cannot make a network namespace, the jobs run one
# after another in the shared network.
#
# The longest jobs start first, by the times the last runs on this machine recorded in
# ${REPLICADR_CACHE}/test-durations (a job not timed yet counts as the longest); with no record,
# in the order given. Each job's output is printed whole when it ends, with its time. Every job
# runs even when one fails; the exit status is non-zero when any failed.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${REPO_ROOT}"
# One job, as the pool starts it: `test-pool.sh --job JOB`.
if [[ "${1:-}" == --job ]]; then
  case "$2" in
    crates)
      status=0
      cargo test --workspace --exclude replicadr-e2e --locked --offline --no-fail-fast || status=$?
      cargo test -p replicadr-e2e --lib --bins --locked --offline --no-fail-fast || status=$?
      exit "${status}"
      ;;
    *) exec cargo test -p replicadr-e2e --test "$2" --locked --offline --no-fail-fast ;;
  esac
fi
(($#)) || die "usage: test-pool.sh JOB... [after:FILE JOB...] (JOB: a file under tests/tests without .rs, or crates)"

slots="${REPLICADR_TEST_JOBS:-3}"
[[ "${slots}" =~ ^[1-9][0-9]*$ ]] || die "REPLICADR_TEST_JOBS='${slots}': expected a whole number, 1 or more"
# A network namespace as root, or inside a user namespace of one's own (mapped to root in it) where
# that is all the machine allows.
isolated=()
for unshare in "unshare --net" "unshare --user --map-root-user --net"; do
  read -r -a command <<<"${unshare}"
  if "${command[@]}" -- ip link set lo up 2>/dev/null; then
    isolated=("${command[@]}" -- bash -c 'ip link set lo up && exec "$@"' test-pool)
    break
  fi
done
if ((${#isolated[@]} == 0)); then
  log "this machine cannot make a network namespace (unshare --net, then ip link set lo up, failed, also in a user namespace): the test jobs run one after another"
  slots=1
fi

durations="${REPLICADR_CACHE}/test-durations"
declare -A recorded=()
if [[ -f "${durations}" ]]; then
  while read -r name seconds rest; do
    [[ "${name}" =~ ^[a-z0-9_]+$ && "${seconds}" =~ ^[0-9]+$ && -z "${rest}" ]] || continue
    recorded["${name}"]="${seconds}"
  done <"${durations}"
fi
# Prints the jobs given, longest recorded first (stable: equal times keep their order).
by_recorded_time() {
  local index=0 name
  for name in "$@"; do
    printf '%s %d %s\n' "${recorded[${name}]:-999999}" "$((index++))" "${name}"
  done | sort -k1,1nr -k2,2n | cut -d' ' -f3
}

# Groups of jobs, each with the file that must exist before it starts ("" for none).
gates=("")
groups=("")
for arg in "$@"; do
  case "${arg}" in
    after:?*)
      gates+=("${arg#after:}")
      groups+=("")
      ;;
    crates) groups[-1]+=" ${arg}" ;;
    *)
      [[ -f "tests/tests/${arg}.rs" ]] || die "test job '${arg}': no file tests/tests/${arg}.rs (expected an end-to-end test file's name, or crates)"
      groups[-1]+=" ${arg}"
      ;;
  esac
done
for i in "${!groups[@]}"; do
  read -r -a jobs <<<"${groups[i]}"
  ((${#jobs[@]})) || continue
  groups[i]="$(by_recorded_time "${jobs[@]}" | tr '\n' ' ')"
done


outputs="$(mktemp -d)"
declare -A name_of=() started=()
# Ends a process and every process it started, children first.
kill_tree() {
  local child
  for child in $(pgrep -P "$1"); do
    kill_tree "${child}"
  done
  kill "$1" 2>/dev/null || true
}
# Stopped (CI's time limit, or a peer build failed): name each job still running, show the end of
# its output, so that a test that hangs is seen, and end it with everything it started.
# shellcheck disable=SC2317 # called by the trap
stop() {
  trap - TERM INT
  local pid
  for pid in "${!name_of[@]}"; do
    log "test job ${name_of[${pid}]} stopped after $((SECONDS - started[${pid}])) s; the end of its output:"
    tail -n 40 "${outputs}/${name_of[${pid}]}" >&2
    kill_tree "${pid}"
  done
  rm -rf "${outputs}"
  exit 143
}
trap stop TERM INT
trap 'rm -rf "${outputs}"' EXIT
failed=()
timed=()
for i in "${!groups[@]}"; do
  read -r -a jobs <<<"${groups[i]}"
  log "test jobs${gates[i]:+ once ${gates[i]} exists}: ${jobs[*]:-none}"
done
log "up to ${slots} test jobs at a time"
while :; do
  # Start jobs while a slot is free: the first group whose gate is open.
  for i in "${!groups[@]}"; do
    [[ -z "${gates[i]}" || -e "${gates[i]}" ]] || break
    read -r -a jobs <<<"${groups[i]}"
    while ((${#jobs[@]})) && ((${#name_of[@]} < slots)); do
      "${isolated[@]}" bash "${BASH_SOURCE[0]}" --job "${jobs[0]}" >"${outputs}/${jobs[0]}" 2>&1 &
      name_of[$!]="${jobs[0]}"
      started[$!]="${SECONDS}"
      jobs=("${jobs[@]:1}")
    done
    groups[i]="${jobs[*]}"
  done
  pending="${groups[*]}"
  ((${#name_of[@]})) || [[ -n "${pending// /}" ]] || break
  sleep 1
  for pid in "${!name_of[@]}"; do
    ! kill -0 "${pid}" 2>/dev/null || continue
    status=0
    wait "${pid}" || status=$?
    name="${name_of[${pid}]}"
    log "test job ${name}: $((SECONDS - started[${pid}])) s, exit ${status}"
    cat "${outputs}/${name}"
    if ((status == 0)); then
      timed+=("${name} $((SECONDS - started[${pid}]))")
    else
      failed+=("${name}")
    fi
    unset "name_of[${pid}]" "started[${pid}]"
  done
done

# Record the times of the jobs that passed, keeping the others' earlier times.
for entry in "${timed[@]}"; do recorded["${entry%% *}"]="${entry##* }"; done
if ! for name in "${!recorded[@]}"; do printf '%s %s\n' "${name}" "${recorded[${name}]}"; done |
  sort >"${durations}.tmp.$$" || ! mv -f "${durations}.tmp.$$" "${durations}"; then
  log "warning: cannot record the jobs' times in ${durations}; the next run orders them as given"
  rm -f "${durations}.tmp.$$"
fi
if ((${#failed[@]})); then
  log "test jobs that failed: ${failed[*]}"
  exit 1
fi
