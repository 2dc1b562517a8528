#!/bin/sh
# JupyterLab in its own environment at the path visa's site settings name
# (provisioning.jupyter_command = /opt/visa/jupyterlab/bin/jupyter-lab).
set -eu
export DEBIAN_FRONTEND=noninteractive
: "${JUPYTERLAB_VERSION:=4.3.*}"

apt-get install -y --no-install-recommends python3-venv
python3 -m venv /opt/visa/jupyterlab
/opt/visa/jupyterlab/bin/pip install --no-cache-dir --upgrade pip
/opt/visa/jupyterlab/bin/pip install --no-cache-dir "jupyterlab==$JUPYTERLAB_VERSION" ipywidgets
/opt/visa/jupyterlab/bin/jupyter-lab --version
