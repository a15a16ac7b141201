#!/usr/bin/env bash
# Builds the static release binaries the images ship and stages them as the image build context, target/images/.
#
# Then, with any OCI builder (BuildKit: the Dockerfiles use COPY --chmod):
#   docker build -f images/plugin/Dockerfile    -t <registry>/replicadr-velero-plugins:<tag> target/images
#   docker build -f images/scheduler/Dockerfile -t <registry>/replicadr:<tag>                 target/images
#
# The binaries are linked statically against glibc (the musl target is not installable here): they run
# in a FROM scratch image. glibc >= 2.34 has the files and dns name services built in, so name
# resolution needs no libnss_*.so at run time.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools cargo file
cd "${REPO_ROOT}"

target=x86_64-unknown-linux-gnu
# A target dir of its own: the static RUSTFLAGS would otherwise invalidate the ordinary build's cache.
target_dir="${REPO_ROOT}/target/static"
context="${REPO_ROOT}/target/images"
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[[ -r "${ca_bundle}" ]] || die "no CA bundle at ${ca_bundle} (install ca-certificates)"

log "building static release binaries for ${target} into ${target_dir}"
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="${target_dir}" \
  cargo build --release --locked --target "${target}" \
  -p replicadr-velero-plugins -p replicadr-scheduler

mkdir -p "${context}"
for binary in replicadr-velero-plugins replicadr; do
  built="${target_dir}/${target}/release/${binary}"
  description="$(file -b "${built}")"
  # "static-pie linked" or "statically linked"; anything dynamic would fail in a scratch image.
  [[ "${description}" == *"static"* ]] || die "${built} is not statically linked: ${description}"
  install -m 0755 "${built}" "${context}/${binary}"
  log "staged ${binary}: ${description}"
done
install -m 0644 "${ca_bundle}" "${context}/ca-certificates.crt"
log "image build context ready: ${context}"
