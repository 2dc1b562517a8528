#!/bin/sh
# Remote desktop: TigerVNC (X and VNC server in one), the session named by the image
# (DESKTOP_SESSION: xfce, mate, openbox, lxqt) and the tools visa's boot scripts call.
set -eu
export DEBIAN_FRONTEND=noninteractive
: "${DESKTOP_SESSION:=xfce}"
# A web browser in the desktop (DESKTOP_BROWSER=none: none, for small test images).
: "${DESKTOP_BROWSER:=firefox-esr}"
[ "$DESKTOP_BROWSER" = none ] && DESKTOP_BROWSER=""

case "$DESKTOP_SESSION" in
    xfce) session_packages="xfce4 xfce4-terminal" ;;
    mate) session_packages="mate-desktop-environment-core" ;;
    openbox) session_packages="openbox xterm" ;;
    lxqt) session_packages="lxqt-core qterminal" ;;
    *) echo "unknown DESKTOP_SESSION $DESKTOP_SESSION" >&2; exit 1 ;;
esac

# shellcheck disable=SC2086 # the package list is meant to split
apt-get install -y --no-install-recommends \
    tigervnc-standalone-server tigervnc-tools xauth util-linux x11-xkb-utils x11-utils \
    xprintidle dbus-x11 dbus-daemon fonts-dejavu-core \
    $DESKTOP_BROWSER $session_packages
# The openbox session opens a terminal where the owner sees it first (others bring their own).
if [ "$DESKTOP_SESSION" = openbox ]; then
    printf '%s\n' 'xterm -geometry 100x30+40+40 &' >> /etc/xdg/openbox/autostart
fi
# visa starts the desktop itself (visa-desktop.service): no display manager.
systemctl disable lightdm.service 2>/dev/null || true
systemctl set-default multi-user.target
