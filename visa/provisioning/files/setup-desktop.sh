#!/bin/sh
# Runs once as root at first boot (cloud-init runcmd): turns the per-instance secret
# into the owner's VNC password file. The secret never appears on a command line.
set -eu
# shellcheck source=/dev/null
. /etc/visa/instance.env

group=$(id -gn "$VISA_OWNER")
install -d -m 0700 -o "$VISA_OWNER" -g "$group" "$VISA_HOME/.vnc"
umask 077
vncpasswd -f < /etc/visa/desktop.secret > "$VISA_HOME/.vnc/passwd"
chown "$VISA_OWNER:$group" "$VISA_HOME/.vnc/passwd"
