#!/bin/sh
# Extra packages of one environment (EXTRA_PACKAGES, space separated).
set -eu
export DEBIAN_FRONTEND=noninteractive

if [ -n "${EXTRA_PACKAGES:-}" ]; then
    # shellcheck disable=SC2086 # the package list is meant to split
    apt-get install -y --no-install-recommends $EXTRA_PACKAGES
fi
