#!/usr/bin/env bash
# Docker from Ubuntu's own archive (signed by the distribution, no extra apt key).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

apt-get install -y -q --no-install-recommends \
  docker.io docker-buildx docker-compose-v2 containerd
systemctl enable docker.service containerd.service
