#!/usr/bin/env bash
# Base packages every job expects: git, build tools, and what the runner needs.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# cloud-init may still be running apt on first boot of the build VM.
cloud-init status --wait >/dev/null 2>&1 || true

apt-get update -q
apt-get -y -q -o Dpkg::Options::=--force-confold dist-upgrade
apt-get install -y -q --no-install-recommends \
  build-essential ca-certificates curl git git-lfs gnupg jq lsb-release \
  make pkg-config python3 python3-pip python3-venv rsync sudo tar unzip \
  wget xz-utils zip zstd
# The runner's own libraries (ICU, Kerberos, lttng, OpenSSL) are installed by
# its bin/installdependencies.sh in 30-runner.sh, which knows the 24.04 names.

# Jobs are untrusted and the VM is single-use: no unattended upgrades racing
# a job for the dpkg lock, no timers waking on a resumed standby VM.
systemctl disable --now unattended-upgrades.service apt-daily.timer apt-daily-upgrade.timer || true
