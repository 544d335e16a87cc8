#!/usr/bin/env bash
# Make the image generic: every VM made from it must look freshly installed.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get -y -q autoremove --purge
apt-get clean
rm -rf /var/lib/apt/lists/* /tmp/garo /home/*/.bash_history /root/.bash_history
# New machine-id, SSH host keys and cloud-init run on each VM's first boot.
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_*
cloud-init clean --logs || true
{ journalctl --rotate && journalctl --vacuum-time=1s; } || true
sync
