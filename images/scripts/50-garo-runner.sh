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
  # fetch_jit_aws needs the AWS CLI (SSM, EC2 tags). Not the snap: snapd
  # refreshes it on its own schedule, mid-job if it likes. The official v2
  # bundle at a pinned version instead, its PGP signature checked against the
  # AWS CLI team key (fingerprint from the AWS CLI install guide).
  : "${AWS_CLI_VERSION:?}"
  AWS_CLI_KEY=FB5DB77FD5C118B80511ADA8A6310ACC4672475C
  tmp=$(mktemp -d)
  zip="awscli-exe-linux-$(uname -m)-${AWS_CLI_VERSION}.zip"
  curl -fsSL --retry 5 -o "$tmp/awscli.zip" "https://awscli.amazonaws.com/$zip"
  curl -fsSL --retry 5 -o "$tmp/awscli.zip.sig" "https://awscli.amazonaws.com/$zip.sig"
  export GNUPGHOME="$tmp/gnupg"
  install -d -m 0700 "$GNUPGHOME"
  gpg --batch --keyserver hkps://keyserver.ubuntu.com --recv-keys "$AWS_CLI_KEY"
  # VALIDSIG carries the signing key's full fingerprint: nothing else will do.
  gpg --batch --status-fd 1 --verify "$tmp/awscli.zip.sig" "$tmp/awscli.zip" 2>/dev/null |
    grep -q "^\[GNUPG:\] VALIDSIG .* $AWS_CLI_KEY\$\|^\[GNUPG:\] VALIDSIG $AWS_CLI_KEY " ||
    { echo "AWS CLI signature does not check out against $AWS_CLI_KEY" >&2; exit 1; }
  unzip -q "$tmp/awscli.zip" -d "$tmp"
  "$tmp/aws/install" --bin-dir /usr/local/bin --install-dir /usr/local/aws-cli
  unset GNUPGHOME
  rm -rf "$tmp"
fi
systemctl daemon-reload
systemctl enable garo-runner.service
