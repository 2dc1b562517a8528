#!/bin/sh
# Runs once as root at first boot (cloud-init runcmd), before anything is written in the home.
# With a persistent home share (VISA_HOME_SHARE=1) the home must be that share, mounted: a
# home on the machine's own disk would die with it, so a share that did not mount fails the
# boot ("visa: FAILED home-mount: ..."). Then, as the owner, /etc/skel is copied into the home
# only when the home is empty: an existing home's content is never overwritten. Everything in
# the home is done as the owner (runuser): a symlink planted there must not make root write
# anything elsewhere, and root may not even read a root-squashed share.
set -eu
# shellcheck source=/dev/null
. /etc/visa/instance.env
home="$VISA_HOME"
if [ "${VISA_HOME_SHARE:-0}" = 1 ]; then
    mount "$home" >&2 2>/dev/null || true  # fstab's entry; a no-op when mounted already
    # Looking inside mounts an automount point; then it must be a mount point of its own.
    timeout 60 ls -d "$home/." >/dev/null 2>&1 || true
    if ! mountpoint -q "$home"; then
        echo "visa: FAILED home-mount: the home share is not mounted at $home" >&2
        exit 1
    fi
fi
# shellcheck disable=SC2016 # expanded by the owner's shell, from its arguments
runuser -u "$VISA_OWNER" -- sh -eu -c '
    [ -d "$1" ] || { echo "visa: FAILED home-mount: $1 is not a directory the owner can use" >&2; exit 1; }
    if [ -z "$(ls -A -- "$1")" ]; then
        cp -R /etc/skel/. "$1"/
    fi
' home-setup "$home"
