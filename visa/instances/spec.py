"""Turns a stored instance into what a cloud needs to create its machine."""

from __future__ import annotations

from datetime import datetime

from visa.clouds.base import ServerSpec
from visa.instances.models import Instance
from visa.provisioning import host_keys
from visa.provisioning.mounts import instance_mounts
from visa.provisioning.site import site_for_instance
from visa.provisioning.userdata import render_metadata, render_user_data
from visa.settings import Settings


def server_spec(instance: Instance, settings: Settings, now: datetime, probe_public_key: str | None = None) -> ServerSpec:
    site = site_for_instance(instance, settings.provisioning)
    secret = settings.resolved_secret_key()
    image, flavour = instance.plan.image, instance.plan.flavour
    # The renderer checks the embargo again: if it was brought back, the create fails rather than mount it.
    open_data = instance.open_data_experiments
    return ServerSpec(
        name=f"{settings.instance_name_prefix}-{instance.id}",
        instance_uid=instance.uid,
        image_ref=image.cloud_image_ref,
        flavour_ref=flavour.cloud_flavour_ref,
        user_data=render_user_data(
            instance, site=site, now=now, probe_public_key=probe_public_key, open_data=open_data,
            host_key=(host_keys.private_openssh(secret, instance.uid), host_keys.public_line(secret, instance.uid)),
        ),
        secret=instance.secret,
        metadata=render_metadata(instance),
        protocols={p.protocol.value: p.port for p in image.protocols},
        mounts=tuple(instance_mounts(instance, site=site, now=now, open_data=open_data)),
        screen_width=instance.screen_width,
        screen_height=instance.screen_height,
        keyboard_layout=instance.keyboard_layout,
        owner_username=instance.owner.username,
        owner_uid=instance.owner.uid_number,
        owner_gid=instance.owner.gid_number,
        cores=flavour.cores,
        memory_mb=flavour.memory_mb,
    )
