#!/usr/bin/env bash
# Install the boot agent and its unit (uploaded to /tmp/garo by Packer).
set -euo pipefail
CLOUD=${CLOUD:?gce or aws}
SRC=${SRC:-/tmp/garo}

install -m 0755 "$SRC/garo-runner" /usr/local/bin/garo-runner
install -m 0644 "$SRC/garo-runner.service" /etc/systemd/system/garo-runner.service
# Only non-secret settings live here; the JIT config never touches the disk.
printf 'GARO_CLOUD=%s\n' "$CLOUD" >/etc/default/garo-runner
if [ "$CLOUD" = aws ]; then
  # fetch_jit_aws needs the AWS CLI (SSM); Ubuntu 24.04 ships it as a snap.
  snap install aws-cli --classic
fi
systemctl daemon-reload
systemctl enable garo-runner.service
