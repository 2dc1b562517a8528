#!/bin/sh
# The owner's desktop (systemd visa-desktop.service, runs as the owner): a TigerVNC
# X server on the instance's VNC port, then the image's desktop session on it.
# The port answers once the server is up: that is the readiness signal.
set -eu
# shellcheck source=/dev/null
. /etc/visa/instance.env

export DISPLAY="$VISA_DISPLAY"
export XAUTHORITY="$VISA_HOME/.Xauthority"
umask 077
touch "$XAUTHORITY"
xauth -f "$XAUTHORITY" add "$DISPLAY" . "$(mcookie)"

Xtigervnc "$DISPLAY" -auth "$XAUTHORITY" -rfbport "$VISA_VNC_PORT" \
    -SecurityTypes VncAuth -PasswordFile "$VISA_HOME/.vnc/passwd" \
    -geometry "$VISA_GEOMETRY" -depth 24 -AlwaysShared -desktop "$VISA_INSTANCE_UID" &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT INT TERM

socket="/tmp/.X11-unix/X${DISPLAY#:}"
tries=0
until [ -S "$socket" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ]; then
        echo "X server did not start" >&2
        exit 1
    fi
    sleep 0.1
done

if [ -n "$VISA_XKB_VARIANT" ]; then
    setxkbmap -layout "$VISA_XKB_LAYOUT" -variant "$VISA_XKB_VARIANT" || true
else
    setxkbmap -layout "$VISA_XKB_LAYOUT" || true
fi

cd "$VISA_HOME"
dbus-run-session -- "$VISA_SESSION"
