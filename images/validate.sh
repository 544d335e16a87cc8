#!/usr/bin/env bash
# Static checks for images/: `packer validate` on the templates (both clouds,
# both architectures) and `shellcheck` on every script. Run by `make test`.
#
# CI has Debian's packer 1.6, which has the googlecompute and amazon-ebs
# builders built in but does not understand `required_plugins`: the templates
# are validated from a temporary directory that holds everything except
# plugins.pkr.hcl (that file is only checked for HCL syntax and formatting).
# Arguments that only the current amazon/googlecompute plugins know (e.g. the
# AMI's imds_support) carry a trailing "# plugin-only" comment: packer 1.6
# validates a copy without those lines, and says which it left out; `packer
# fmt -check` still reads the real files. Validation needs no cloud credentials.
set -euo pipefail

IMAGES=$(cd "$(dirname "$0")" && pwd)
PACKER=${PACKER:-packer}
SHELLCHECK=${SHELLCHECK:-shellcheck}
PLUGINS_FILE=plugins.pkr.hcl

missing=()
command -v "$PACKER" >/dev/null 2>&1 || missing+=(packer)
command -v "$SHELLCHECK" >/dev/null 2>&1 || missing+=(shellcheck)
if [ ${#missing[@]} -gt 0 ]; then
  echo "images/validate.sh: missing ${missing[*]}: run it through \`make test\` (installs both), or: sudo apt-get install -y ${missing[*]}" >&2
  exit 2
fi

failures=0
check() {
  local what=$1; shift
  local out
  if out=$("$@" 2>&1); then
    echo "ok    $what"
  else
    echo "FAIL  $what"
    printf '%s\n' "$out" | sed 's/^/      /'
    failures=$((failures + 1))
  fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Templates without the plugins file; scripts and the agent are linked so the
# provisioners' paths (${path.root}/...) resolve exactly as in a real build.
shopt -s nullglob
templates=()
plugin_only=()
legacy=false
case "$("$PACKER" version | head -n 1)" in *" v1.6."*|*" 1.6."*) legacy=true ;; esac
for f in "$IMAGES"/*.pkr.hcl; do
  [ "$(basename "$f")" = "$PLUGINS_FILE" ] && continue
  if [ "$legacy" = true ]; then
    grep -v '# plugin-only' "$f" >"$tmp/$(basename "$f")"
    while IFS= read -r line; do
      plugin_only+=("$(basename "$f"): $(echo "$line" | awk '{print $1}')")
    done < <(grep '# plugin-only' "$f")
  else
    cp "$f" "$tmp/"
  fi
  templates+=("$(basename "$f")")
done
for d in scripts garo-runner; do ln -s "$IMAGES/$d" "$tmp/$d"; done
[ ${#templates[@]} -gt 0 ] || { echo "FAIL  no *.pkr.hcl templates in $IMAGES"; exit 1; }
echo "packer $("$PACKER" version | head -n 1): templates ${templates[*]}"
if [ ${#plugin_only[@]} -gt 0 ]; then
  echo "note  packer 1.6 validates without the plugin-only argument(s): ${plugin_only[*]}"
fi

check "packer fmt -check (all *.pkr.hcl, $PLUGINS_FILE included)" \
  "$PACKER" fmt -check -diff "$IMAGES"
# No -only: a name that matches nothing would make validate pass vacuously.
for arch in x64 arm64; do
  check "packer validate arch=$arch (googlecompute.runner + amazon-ebs.runner)" \
    "$PACKER" validate -var gcp_project_id=garo-validate -var arch="$arch" "$tmp"
done

scripts=("$IMAGES"/validate.sh "$IMAGES"/garo-runner/garo-runner "$IMAGES"/garo-runner/hooks/*.sh "$IMAGES"/scripts/*.sh)
for s in "${scripts[@]}"; do
  check "shellcheck ${s#"$IMAGES"/}" "$SHELLCHECK" -x "$s"
done

if [ "$failures" -gt 0 ]; then
  echo "images/validate.sh: $failures check(s) failed"
  exit 1
fi
echo "images/validate.sh: all checks passed"
