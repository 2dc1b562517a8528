#!/bin/sh
# Every visa image: cloud-init, data mounts (NFS, CephFS, autofs), sudo and Python for
# the activity probe, SSH for the scheduler's probe account.
set -eu
export DEBIAN_FRONTEND=noninteractive

apt-get update
apt-get install -y --no-install-recommends \
    cloud-init cloud-guest-utils openssh-server sudo python3 \
    nfs-common ceph-common autofs \
    ca-certificates curl gnupg locales tzdata
sed -i 's/^# *en_US.UTF-8/en_US.UTF-8/' /etc/locale.gen
locale-gen
# The system's locale, said once here: cloud-init's locale module finds it set and does not run
# locale-gen again at first boot (about 100 s of a 226 s boot under emulation).
echo 'LANG=en_US.UTF-8' > /etc/default/locale
install -d -m 0755 /usr/local/libexec/visa /etc/visa
