#!/bin/sh
# Runs one boot step (cloud-init runcmd) and says on the console when it fails:
# "visa: FAILED <step>: <reason>" is what visa reads to end the instance's start in a clear
# state instead of waiting for the desktop. Usage: step NAME COMMAND [ARGUMENT...]
set -eu
step="$1"
shift
status=0
"$@" || status=$?
if [ "$status" -ne 0 ]; then
    echo "visa: FAILED $step: $(basename "$1") exited with status $status" >&2
fi
exit "$status"
