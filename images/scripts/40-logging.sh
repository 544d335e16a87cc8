#!/usr/bin/env bash
# Cloud logging agent hook: ship the journal (the boot agent and runner log
# there) to the cloud's logging service. LOGGING_AGENT=none skips it.
set -euo pipefail
CLOUD=${CLOUD:?gce or aws}
LOGGING_AGENT=${LOGGING_AGENT:-default}
[ "$LOGGING_AGENT" = none ] && { echo "logging agent: skipped"; exit 0; }
export DEBIAN_FRONTEND=noninteractive
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

case "$CLOUD" in
  gce)
    # Google Cloud Ops Agent, from Google's signed apt repository.
    curl -fsSL --retry 5 -o "$tmp/add-repo.sh" \
      https://dl.google.com/cloudagents/add-google-cloud-ops-agent-repo.sh
    bash "$tmp/add-repo.sh" --also-install
    install -d /etc/google-cloud-ops-agent
    cat >/etc/google-cloud-ops-agent/config.yaml <<'YAML'
logging:
  receivers:
    garo_journal:
      type: systemd_journald
  service:
    pipelines:
      garo:
        receivers: [garo_journal]
YAML
    ;;
  aws)
    # Amazon CloudWatch agent .deb for this architecture; it reads the
    # config that the instance's launch template provides (or SSM).
    arch=$(dpkg --print-architecture)
    curl -fsSL --retry 5 -o "$tmp/cwagent.deb" \
      "https://amazoncloudwatch-agent.s3.amazonaws.com/ubuntu/${arch}/latest/amazon-cloudwatch-agent.deb"
    apt-get install -y -q "$tmp/cwagent.deb"
    ;;
  *) echo "unknown cloud $CLOUD" >&2; exit 1 ;;
esac
