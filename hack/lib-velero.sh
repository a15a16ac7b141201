# Helpers for the scripts that build Go code against a Velero module: wrapper modules that honour velero's replaces.
# shellcheck shell=bash
# Source it after hack/lib.sh.

# Directory and go.mod of a downloaded module version, e.g. `go_module_field github.com/x/y v1.2.3 GoMod`.
go_module_field() {
  local module="$1" version="$2" field="$3" json
  json="$(go mod download -json "${module}@${version}")" || die "cannot download ${module}@${version}"
  jq -er ".${field}" <<<"${json}" || die "go mod download gave no ${field} for ${module}@${version}"
}

# Copy every replace directive of module@version's own go.mod into the go.mod of the current directory.
# `go install pkg@version` refuses modules with replaces, and a wrapper module only sees them if it repeats them.
copy_module_replaces() {
  local module="$1" version="$2" gomod replacement
  gomod="$(go_module_field "${module}" "${version}" GoMod)"
  while IFS= read -r replacement; do
    [[ -n "${replacement}" ]] || continue
    case "${replacement}" in
      *=.* | *=/*) die "${module}@${version} replaces with a local path (${replacement}); a wrapper module cannot copy that" ;;
    esac
    go mod edit -replace "${replacement}"
  done < <(go mod edit -json "${gomod}" | jq -r '
    .Replace[]? |
    "\(.Old.Path)\(if .Old.Version then "@" + .Old.Version else "" end)=\(.New.Path)\(if .New.Version then "@" + .New.Version else "" end)"')
}

# Create a wrapper module in the current (empty) directory that requires velero@version with velero's replaces.
init_velero_wrapper_module() {
  local module_path="$1" version="$2"
  go mod init "${module_path}" >/dev/null 2>&1
  copy_module_replaces github.com/vmware-tanzu/velero "${version}"
  go mod edit -require "github.com/vmware-tanzu/velero@${version}"
}

# Run a go command that resolves modules (go get, go mod tidy) in the current module. The module proxy this project
# reaches is a partial mirror: some pinned versions have a go.mod but no zip ("reading …zip: 403 Forbidden"). When
# that happens, require the next published patch of the same minor and retry, and say so: the build then differs
# from upstream's by that patch.
go_resolving_unavailable() {
  local errors attempt missing module version newer
  errors="$(mktemp)"
  for attempt in $(seq 1 30); do
    if "$@" 2>"${errors}"; then
      rm -f "${errors}"
      return 0
    fi
    grep -v '^go: downloading ' "${errors}" >&2 || true
    missing="$(grep -oE '[^ :]+@v[0-9]+\.[0-9]+\.[0-9]+: reading [^ ]+\.zip: (403|404|410)' "${errors}" | head -n 1 | cut -d: -f1)"
    if [[ -z "${missing}" ]]; then
      rm -f "${errors}"
      return 1
    fi
    module="${missing%@*}"
    version="${missing##*@}"
    newer="$(next_published_patch "${module}" "${version}")"
    [[ -n "${newer}" ]] || die "${module}@${version} is not downloadable and no later patch of it is published"
    log "warning: ${module}@${version} is not downloadable from the module proxy; requiring ${newer} (retry ${attempt})"
    go mod edit -require "${module}@${newer}"
  done
  rm -f "${errors}"
  die "gave up resolving unavailable module versions"
}

# The lowest published release vX.Y.Z' of module with Z' > Z (no pre-releases), or nothing.
next_published_patch() {
  local module="$1" version="$2" minor patch
  minor="${version%.*}"
  patch="${version##*.}"
  (cd / && go list -m -versions "${module}") | tr ' ' '\n' | tail -n +2 | grep -E "^${minor//./\\.}\.[0-9]+$" |
    awk -F. -v p="${patch}" '$3 + 0 > p + 0 { print $3 " " $0 }' | sort -n | head -n 1 | cut -d' ' -f2
}
