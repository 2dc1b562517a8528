# JupyterLab: notebooks only, the facility's Python kernels from CVMFS.
image_name      = "visa-jupyterlab-4.3"
desktop         = false
jupyterlab      = true
apptainer       = true
extra_packages  = ["python3-numpy", "python3-h5py", "hdf5-tools"]
