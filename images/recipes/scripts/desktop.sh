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
# Printing: CUPS with one queue, PDF (cups-pdf), the default: whatever an application prints
# lands in the user's ~/PDF (Debian's cups-pdf.conf: Out ${HOME}/PDF), which visa offers on the desktop page. Local queues only: no
# printer of the network is looked for or shared.
apt-get install -y --no-install-recommends cups printer-driver-cups-pdf
systemctl disable cups-browsed.service 2>/dev/null || true
# cupsd runs at the first boot, not in the build's chroot: the queue is made then (visa-printer.service).
cat > /etc/systemd/system/visa-printer.service <<'UNIT'
[Unit]
Description=The PDF print queue (cups-pdf), made once
After=cups.service
Requires=cups.service
ConditionPathExists=!/var/lib/visa/printer-made

[Service]
Type=oneshot
ExecStart=/usr/sbin/lpadmin -p PDF -E -v cups-pdf:/ -P /usr/share/ppd/cups-pdf/CUPS-PDF_opt.ppd -o printer-is-shared=false
ExecStart=/usr/sbin/lpadmin -d PDF
ExecStart=/bin/sh -c 'mkdir -p /var/lib/visa && touch /var/lib/visa/printer-made'

[Install]
WantedBy=multi-user.target
UNIT
systemctl enable cups.service visa-printer.service
# The openbox session opens a terminal where the owner sees it first (others bring their own).
if [ "$DESKTOP_SESSION" = openbox ]; then
    printf '%s\n' 'xterm -geometry 100x30+40+40 &' >> /etc/xdg/openbox/autostart
fi
# visa starts the desktop itself (visa-desktop.service): no display manager.
systemctl disable lightdm.service 2>/dev/null || true
systemctl set-default multi-user.target
