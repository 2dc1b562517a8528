#!/bin/sh
# Milliseconds since the owner's last input on the desktop. The probe account may run
# this, and only this, as the owner (sudoers rule written by cloud-init).
set -eu
# shellcheck source=/dev/null
. /etc/visa/instance.env

DISPLAY="$VISA_DISPLAY" XAUTHORITY="$VISA_HOME/.Xauthority" exec xprintidle
