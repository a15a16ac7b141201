#!/usr/bin/env bash
# Installs what a fresh machine lacks for the drill and the tests: Debian's jq, shellcheck, file, musl-tools, procps and iproute2, and the pinned Rust toolchain with its musl target.
#
# Idempotent: a tool already on PATH is left alone. Debian packages need root (or sudo); without either
# the script names what is missing and stops. `hack/test.sh` and `hack/drill.sh` run it first.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${REPO_ROOT}"

# command → Debian package. musl-gcc compiles the C parts (aws-lc) of the static image binaries;
# ip brings up the loopback of the network namespace each test job runs in (hack/test-pool.sh).
declare -A package_of=([jq]=jq [shellcheck]=shellcheck [file]=file [musl-gcc]=musl-tools [pgrep]=procps [ip]=iproute2)
wanted=("$@")
((${#wanted[@]})) || wanted=(jq shellcheck file musl-gcc pgrep ip)

missing=()
for tool in "${wanted[@]}"; do
  [[ -n "${package_of[${tool}]:-}" ]] || die "install-tools.sh knows no package for '${tool}' (known: ${!package_of[*]})"
  command -v "${tool}" >/dev/null 2>&1 || missing+=("${package_of[${tool}]}")
done
if ((${#missing[@]})); then
  as_root=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 || die "missing ${missing[*]}: install them (apt-get install ${missing[*]}) or run as root"
    as_root=(sudo)
  fi
  log "installing Debian packages: ${missing[*]}"
  "${as_root[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# rustup installs the toolchain rust-toolchain.toml pins, but not always the targets it lists
# (RUSTUP_AUTO_INSTALL=0 turns that off): ask for both explicitly.
require_tools rustup
toolchain="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)"
[[ -n "${toolchain}" ]] || die "rust-toolchain.toml names no channel"
if ! rustup target list --installed --toolchain "${toolchain}" 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  log "installing Rust ${toolchain} with the x86_64-unknown-linux-musl target"
  rustup toolchain install "${toolchain}" --profile minimal --component rustfmt,clippy --target x86_64-unknown-linux-musl >&2
fi
