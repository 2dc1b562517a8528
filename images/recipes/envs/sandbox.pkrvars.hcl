# Sandbox: the small desktop image the test suite builds (images/recipes/build.py, make image)
# and boots in the OpenStack sandbox: openbox + xterm, JupyterLab, no browser, no Apptainer.
image_name      = "visa-sandbox-desktop"
desktop         = true
desktop_session = "openbox"
browser         = "none"
jupyterlab      = true
apptainer       = false
extra_packages  = []
