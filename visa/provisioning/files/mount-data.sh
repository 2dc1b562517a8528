#!/bin/sh
# Runs once as root at first boot (cloud-init runcmd): mounts the experiment data that
# cloud-init wrote in /etc/fstab (again: the network may have come late) and says on the
# console which of them are missing. The desktop starts either way: a scientist can still
# work, and visa shows the instance as partly available with this message.
# /etc/visa/mounts: one mount point a line, written by visa.
set -eu
# -F: one mount process per file system, all at once (each waits on its server).
mount -a -F -t nfs,nfs4,ceph >&2 || true
missing=""
while IFS= read -r target; do
    [ -n "$target" ] || continue
    # Reading the file system's type mounts an automount point; "autofs" left means it failed.
    kind=$(timeout 60 stat -f -c %T "$target" 2>/dev/null || true)
    case "$kind" in
        nfs* | ceph*) ;;
        *) missing="$missing $target" ;;
    esac
done < /etc/visa/mounts
if [ -n "$missing" ]; then
    echo "visa: FAILED data-mount: not mounted:$missing" >&2
fi
exit 0
