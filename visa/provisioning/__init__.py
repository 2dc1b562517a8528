"""What a machine receives at boot: cloud-init user-data, metadata and data mounts.

Pure rendering from a plain :class:`~visa.provisioning.spec.BootSpec` (built by
``visa.instances.spec.boot_spec``): nothing here reads the database or calls a cloud.
``render_user_data`` is the entry point; ``instance_mounts`` gives the same data mounts as
``MountSpec`` for providers that apply them themselves (the local provider).
"""

from visa.provisioning.mounts import instance_mounts
from visa.provisioning.spec import BootSpec
from visa.provisioning.userdata import (
    readiness_ports,
    render_metadata,
    render_user_data,
)

__all__ = ["BootSpec", "instance_mounts", "readiness_ports", "render_metadata", "render_user_data"]
