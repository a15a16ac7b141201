#!/usr/bin/env bash
# Builds the static (musl) release binaries the images ship, checks them as the images run them, and stages them as the image build context, target/images/.
#
# Then, with any OCI builder (BuildKit: the Dockerfiles use COPY --chmod):
#   docker build -f images/plugin/Dockerfile    -t <registry>/replicadr-velero-plugins:<tag> target/images
#   docker build -f images/scheduler/Dockerfile -t <registry>/replicadr:<tag>                 target/images
#
# The binaries are linked statically against musl (x86_64-unknown-linux-musl, which
# rust-toolchain.toml installs; C code such as aws-lc is compiled with musl-gcc from Debian's
# musl-tools): they need no library at run time and run in a FROM scratch image.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools cargo file musl-gcc
cd "${REPO_ROOT}"

target=x86_64-unknown-linux-musl
# release for the images; the test job checks the same build with the unoptimised static-check profile.
profile="${REPLICADR_STATIC_PROFILE:-release}"
# Outside the clone and apart from the ordinary build, so that reruns reuse it.
target_dir="${REPLICADR_CACHE}/static-target"
context="${REPO_ROOT}/target/images"
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[[ -r "${ca_bundle}" ]] || die "no CA bundle at ${ca_bundle} (install ca-certificates)"

log "building static ${profile} binaries for ${target} into ${target_dir}"
CARGO_TARGET_DIR="${target_dir}" \
  cargo build --profile "${profile}" --locked --target "${target}" \
  -p replicadr-velero-plugins -p replicadr-cli

mkdir -p "${context}"
for binary in replicadr-velero-plugins replicadr; do
  built="${target_dir}/${target}/${profile}/${binary}"
  description="$(file -b "${built}")"
  # "static-pie linked" or "statically linked"; anything dynamic would fail in a scratch image.
  [[ "${description}" == *"static"* ]] || die "${built} is not statically linked: ${description}"
  install -m 0755 "${built}" "${context}/${binary}"
  log "staged ${binary}: ${description}"
done
install -m 0644 "${ca_bundle}" "${context}/ca-certificates.crt"

# The entrypoints, run as the images run them, with an empty environment.
scratch="$(mktemp -d)"
trap 'rm -rf "${scratch}"' EXIT
env -i "${context}/replicadr-velero-plugins" install "${scratch}" >/dev/null ||
  die "the plugin image's entrypoint (install /target) failed"
cmp -s "${context}/replicadr-velero-plugins" "${scratch}/replicadr-velero-plugins" ||
  die "install /target did not copy the plugin binary"
env -i "${context}/replicadr" scheduler --help >/dev/null || die "the scheduler image's entrypoint failed"
log "image build context ready: ${context}"
