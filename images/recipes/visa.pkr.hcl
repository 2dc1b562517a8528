# Build recipe of visa's cloud images (Packer, QEMU builder, Debian 12 cloud image base).
#
# One template, one variables file per environment (envs/<name>.pkrvars.hcl), so every
# image is built the same way:
#
#   packer init images/recipes/visa.pkr.hcl
#   packer build -var-file=images/recipes/envs/desktop.pkrvars.hcl images/recipes/visa.pkr.hcl
#   openstack image create --disk-format qcow2 --file output/<image_name>/<image_name>.qcow2 <image_name>
#
# image_name must be the catalogue's cloud_image (images/<name>.yaml): the tests check it.
# The image holds software only; users, data mounts, CVMFS repositories and the desktop
# and JupyterLab services are rendered at boot by visa (visa/provisioning).

packer {
  required_plugins {
    qemu = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/qemu"
    }
  }
}

variable "image_name" {
  type        = string
  description = "Name of the image in the cloud: the catalogue's cloud_image"
}

variable "desktop" {
  type        = bool
  description = "Install the remote desktop (TigerVNC and a desktop session)"
}

variable "desktop_session" {
  type        = string
  default     = "xfce"
  description = "xfce, mate, openbox or lxqt: the catalogue's options.desktop_session"
}

variable "browser" {
  type        = string
  default     = "firefox-esr"
  description = "Debian package of the desktop's web browser, or none"
}

variable "jupyterlab" {
  type        = bool
  description = "Install JupyterLab in /opt/visa/jupyterlab"
}

variable "apptainer" {
  type        = bool
  description = "Install Apptainer (container images from CVMFS)"
}

variable "extra_packages" {
  type        = list(string)
  default     = []
  description = "Debian packages of this environment"
}

variable "base_image_url" {
  type    = string
  default = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
}

variable "base_image_checksum" {
  type    = string
  default = "file:https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS"
}

variable "disk_size" {
  type    = string
  default = "20G"
}

variable "cvmfs_domain" {
  type        = string
  default     = "esrf.fr"
  description = "The facility's CVMFS domain (provisioning.cvmfs_domains)"
}

variable "cvmfs_domain_key" {
  type        = string
  default     = ""
  sensitive   = true
  description = "PEM public key of that domain, built into the image when given"
}

locals {
  scripts = concat(
    ["${path.root}/scripts/base.sh", "${path.root}/scripts/cvmfs.sh"],
    var.desktop ? ["${path.root}/scripts/desktop.sh"] : [],
    var.jupyterlab ? ["${path.root}/scripts/jupyterlab.sh"] : [],
    var.apptainer ? ["${path.root}/scripts/apptainer.sh"] : [],
    ["${path.root}/scripts/packages.sh", "${path.root}/scripts/cleanup.sh"],
  )
}

source "qemu" "visa" {
  iso_url          = var.base_image_url
  iso_checksum     = var.base_image_checksum
  disk_image       = true
  disk_size        = var.disk_size
  format           = "qcow2"
  output_directory = "output/${var.image_name}"
  vm_name          = "${var.image_name}.qcow2"
  headless         = true
  cpus             = 2
  memory           = 4096
  # The base image is a cloud image: a NoCloud seed gives the build a temporary account.
  cd_label = "cidata"
  cd_files = ["${path.root}/seed/meta-data", "${path.root}/seed/user-data"]
  ssh_username     = "packer"
  ssh_password     = "packer"
  ssh_timeout      = "20m"
  shutdown_command = "sudo shutdown -P now"
}

build {
  sources = ["source.qemu.visa"]

  provisioner "shell" {
    execute_command = "sudo -E sh -eu '{{ .Path }}'"
    environment_vars = [
      "DESKTOP_SESSION=${var.desktop_session}",
      "DESKTOP_BROWSER=${var.browser}",
      "EXTRA_PACKAGES=${join(" ", var.extra_packages)}",
      "CVMFS_DOMAIN=${var.cvmfs_domain}",
      "CVMFS_DOMAIN_KEY=${var.cvmfs_domain_key}",
    ]
    scripts = local.scripts
  }

  # The build account goes with the seed: cleanup.sh reset cloud-init, this removes the user.
  provisioner "shell" {
    execute_command = "sudo sh '{{ .Path }}'"
    inline          = ["userdel --remove --force packer || true"]
    skip_clean      = true
  }
}
