#!/bin/sh
# Leave an image that boots as new: cloud-init runs again, no host keys or logs kept.
set -eu

apt-get clean
rm -rf /var/lib/apt/lists/*
cloud-init clean --logs --seed
rm -f /etc/ssh/ssh_host_*
truncate -s 0 /etc/machine-id
