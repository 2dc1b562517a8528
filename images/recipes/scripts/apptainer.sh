#!/bin/sh
# Apptainer, to run the container images published on CVMFS.
set -eu
export DEBIAN_FRONTEND=noninteractive
: "${APPTAINER_VERSION:=1.3.6}"

arch=$(dpkg --print-architecture)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL -o "$tmp/apptainer.deb" \
    "https://github.com/apptainer/apptainer/releases/download/v$APPTAINER_VERSION/apptainer_${APPTAINER_VERSION}_$arch.deb"
apt-get install -y "$tmp/apptainer.deb"
apptainer --version
