#!/usr/bin/env bash
# The GitHub Actions runner, pinned: version and SHA-256 come from the Packer
# variables (runner_version, runner_sha256_<arch>), never from "latest".
set -euo pipefail
: "${RUNNER_VERSION:?}" "${RUNNER_ARCH:?}" "${RUNNER_SHA256:?}"
RUNNER_DIR=${RUNNER_DIR:-/opt/actions-runner}
RUNNER_SUDO=${RUNNER_SUDO:-true}

case "$RUNNER_ARCH" in x64|arm64) ;; *) echo "unsupported arch $RUNNER_ARCH" >&2; exit 1 ;; esac
case "$RUNNER_SHA256" in
  *[!0-9a-f]*|'') echo "runner SHA-256 must be 64 lowercase hex digits" >&2; exit 1 ;;
esac
[ "${#RUNNER_SHA256}" -eq 64 ] || { echo "runner SHA-256 must be 64 hex digits" >&2; exit 1; }

# The unprivileged user the job runs as. docker group: jobs use containers.
id runner >/dev/null 2>&1 || useradd --create-home --shell /bin/bash runner
usermod -aG docker runner
if [ "$RUNNER_SUDO" = true ]; then
  # Like GitHub-hosted runners; the VM is single-use and deleted after the job.
  echo 'runner ALL=(ALL) NOPASSWD:ALL' >/etc/sudoers.d/90-garo-runner
  chmod 0440 /etc/sudoers.d/90-garo-runner
  visudo -cf /etc/sudoers.d/90-garo-runner
fi

tarball="actions-runner-linux-${RUNNER_ARCH}-${RUNNER_VERSION}.tar.gz"
tmp=$(mktemp -d)
curl -fsSL --retry 5 -o "$tmp/$tarball" \
  "https://github.com/actions/runner/releases/download/v${RUNNER_VERSION}/${tarball}"
echo "${RUNNER_SHA256}  $tmp/$tarball" | sha256sum -c -

install -d -o runner -g runner -m 0755 "$RUNNER_DIR"
tar -xzf "$tmp/$tarball" -C "$RUNNER_DIR"
rm -rf "$tmp"
# installdependencies.sh calls apt-get: no debconf prompt may stop the build.
DEBIAN_FRONTEND=noninteractive "$RUNNER_DIR/bin/installdependencies.sh"
chown -R runner:runner "$RUNNER_DIR"
echo "$RUNNER_VERSION" >/etc/garo-runner-version
