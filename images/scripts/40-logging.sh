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
    # Google Cloud Ops Agent 2.x, from Google's signed apt repository (the
    # major version pinned: a new major may change the config format).
    curl -fsSL --retry 5 -o "$tmp/add-repo.sh" \
      https://dl.google.com/cloudagents/add-google-cloud-ops-agent-repo.sh
    bash "$tmp/add-repo.sh" --also-install --version='2.*.*'
    install -d /etc/google-cloud-ops-agent
    # The journal only. The built-in default_pipeline reads /var/log/syslog,
    # which rsyslog fills from the same journal: turned off, or every line
    # would arrive twice.
    cat >/etc/google-cloud-ops-agent/config.yaml <<'YAML'
logging:
  receivers:
    garo_journal:
      type: systemd_journald
  service:
    pipelines:
      default_pipeline:
        receivers: []
      garo:
        receivers: [garo_journal]
YAML
    ;;
  aws)
    # No agent yet: an agent that is installed but not configured ships
    # nothing. The AWS backend (future work) brings the CloudWatch agent with
    # a pinned version and its configuration; until then the journal stays
    # on the instance (see docs/images.md).
    echo "logging agent: none on AWS yet"
    ;;
  *) echo "unknown cloud $CLOUD" >&2; exit 1 ;;
esac
