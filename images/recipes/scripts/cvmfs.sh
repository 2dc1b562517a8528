#!/bin/sh
# CVMFS client; the repositories, proxy and cache size are written at boot by visa.
# VISA_OFFLINE_BUILD=1 (images/recipes/build.py: Debian's archive only, which has no CVMFS
# client): the configuration directories and keys only; boot then reports each repository
# as not mounted and carries on.
set -eu
export DEBIAN_FRONTEND=noninteractive
: "${CVMFS_RELEASE_DEB_URL:=https://cvmrepo.s3.cern.ch/cvmrepo/apt/cvmfs-release-latest_all.deb}"
: "${EESSI_CONFIG_DEB_URL:=https://github.com/EESSI/filesystem-layer/releases/download/latest/cvmfs-config-eessi_latest_all.deb}"

install -d -m 0755 /etc/cvmfs /etc/cvmfs/domain.d /etc/cvmfs/keys /etc/auto.master.d /cvmfs
if [ "${VISA_OFFLINE_BUILD:-0}" = 1 ]; then
    echo "offline build: CVMFS configuration only, no client" >&2
else
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    curl -fsSL -o "$tmp/cvmfs-release.deb" "$CVMFS_RELEASE_DEB_URL"
    curl -fsSL -o "$tmp/cvmfs-config-eessi.deb" "$EESSI_CONFIG_DEB_URL"
    apt-get install -y "$tmp/cvmfs-release.deb"
    apt-get update
    apt-get install -y cvmfs cvmfs-config-default "$tmp/cvmfs-config-eessi.deb"
fi

# The facility's own domain key, when the build is given one (CVMFS_DOMAIN_KEY, PEM).
if [ -n "${CVMFS_DOMAIN:-}" ] && [ -n "${CVMFS_DOMAIN_KEY:-}" ]; then
    install -d -m 0755 "/etc/cvmfs/keys/$CVMFS_DOMAIN"
    printf '%s\n' "$CVMFS_DOMAIN_KEY" > "/etc/cvmfs/keys/$CVMFS_DOMAIN/$CVMFS_DOMAIN.pub"
fi
