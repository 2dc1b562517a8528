# Desktop: Debian desktop with the facility's analysis software from CVMFS.
image_name      = "visa-desktop-2026.11"
desktop         = true
desktop_session = "xfce"
jupyterlab      = true
apptainer       = true
extra_packages  = ["python3-numpy", "python3-h5py", "hdf5-tools", "gedit"]
