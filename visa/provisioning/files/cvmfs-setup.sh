#!/bin/sh
# Runs once as root at first boot (cloud-init runcmd): the CVMFS client with the
# repositories visa wrote in /etc/cvmfs/default.local. An image without the client (or a
# repository that cannot be reached) is reported and the boot carries on: the desktop
# and the data do not depend on CVMFS.
set -eu

repositories=$(sed -n 's/^CVMFS_REPOSITORIES=//p' /etc/cvmfs/default.local 2>/dev/null || true)
if ! command -v cvmfs_config >/dev/null 2>&1; then
    echo "visa: the CVMFS client is not installed in this image: repositories ${repositories:-none} are not mounted" >&2
    exit 0
fi
cvmfs_config setup noautofs
systemctl restart autofs
failed=""
for repository in $(echo "$repositories" | tr ',' ' '); do
    cvmfs_config probe "$repository" >/dev/null 2>&1 || failed="$failed $repository"
done
if [ -n "$failed" ]; then
    echo "visa: CVMFS repositories not mounted:$failed" >&2
fi
