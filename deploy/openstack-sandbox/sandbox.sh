#!/bin/sh
# Entry point of visa's OpenStack sandbox: install | start | stop | status | credentials | kill | destroy
exec "${PYTHON:-python3}" "$(dirname "$0")/sandbox.py" "$@"
