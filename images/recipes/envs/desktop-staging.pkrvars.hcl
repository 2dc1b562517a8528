# Desktop staging: the next desktop release, for testing before it becomes the default.
image_name      = "visa-desktop-2026.12-rc1"
desktop         = true
desktop_session = "xfce"
jupyterlab      = true
apptainer       = true
extra_packages  = ["python3-numpy", "python3-h5py", "hdf5-tools", "gedit"]
