#!/bin/sh
# Runs once as root at first boot (cloud-init runcmd): turns the per-instance secret
# into the owner's VNC password file. The secret never appears on a command line.
# Everything in the home is written as the owner (runuser): the home may come from shared
# storage the owner writes elsewhere, and a symlink planted there must not make root write,
# create or chown anything outside it. Root only opens the secret, on the owner's stdin.
set -eu
# shellcheck source=/dev/null
. /etc/visa/instance.env

# shellcheck disable=SC2016 # expanded by the owner's shell, from its arguments
runuser -u "$VISA_OWNER" -- sh -eu -c '
    umask 077
    vnc="$1/.vnc"
    [ -d "$vnc" ] && [ ! -L "$vnc" ] || { rm -f "$vnc"; mkdir "$vnc"; }
    chmod 0700 "$vnc"
    tmp=$(mktemp "$vnc/.passwd.XXXXXX")
    vncpasswd -f > "$tmp"
    mv -f "$tmp" "$vnc/passwd"
' setup-desktop "$VISA_HOME" < /etc/visa/desktop.secret
