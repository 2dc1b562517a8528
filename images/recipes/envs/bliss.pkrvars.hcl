# Bliss: desktop with the beamline control tools (offline); Bliss itself comes from CVMFS.
image_name      = "visa-bliss-2.1"
desktop         = true
desktop_session = "xfce"
jupyterlab      = false
apptainer       = true
extra_packages  = ["python3-numpy", "python3-h5py", "hdf5-tools", "redis-tools"]
