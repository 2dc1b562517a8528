"""Turns a stored instance into what provisioning renders from and what a cloud needs to create its machine."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from visa.clouds.base import ServerSpec
from visa.errors import Forbidden, NotFound
from visa.experiments.models import Experiment, Proposal
from visa.instances.models import Instance, InstanceHome
from visa.network.service import groups_at_create
from visa.provisioning import host_keys, names
from visa.provisioning.mounts import home_mount, instance_mounts
from visa.provisioning.site import site_for_cloud
from visa.provisioning.spec import BootSpec, ExperimentData, Owner, Port
from visa.provisioning.userdata import MASK, render_metadata, render_user_data
from visa.settings import ProvisioningSettings, Settings


def _open_data(requested: Iterable[Experiment | Proposal], now: datetime) -> list[Experiment]:
    """The experiments of the open data asked for; a proposal still under embargo is refused."""
    experiments: list[Experiment] = []
    for item in requested:
        proposal = item.proposal if isinstance(item, Experiment) else item
        names.path_component(proposal.identifier, "proposal")
        if not proposal.is_open_data(now):
            raise Forbidden(f"the data of proposal {proposal.identifier} is not open yet", field="open_data")
        if isinstance(item, Experiment):
            experiments.append(item)
            continue
        session = object_session(proposal)
        if session is None:
            raise ValueError("open-data proposals must be attached to a session")
        experiments.extend(
            session.scalars(
                select(Experiment).where(Experiment.proposal_id == proposal.id).order_by(Experiment.id)
            )
        )
    return experiments


def _data(experiment: Experiment, owner_id: int | None) -> ExperimentData:
    return ExperimentData(
        id=experiment.id,
        proposal=experiment.proposal.identifier,
        beamline=experiment.instrument.name,
        owner_is_member=owner_id is not None and owner_id in {m.id for m in experiment.members},
    )


def boot_spec(instance: Instance, *, now: datetime, open_data: Sequence[Experiment | Proposal] = ()) -> BootSpec:
    """What provisioning renders the instance's machine from.

    ``open_data``: experiments or proposals whose open data (embargo over at ``now``) the owner
    asked to see; a proposal still under embargo raises ``Forbidden``.
    """
    owner, image = instance.owner, instance.plan.image
    return BootSpec(
        id=instance.id,
        uid=instance.uid,
        secret=instance.secret,
        owner=Owner(
            username=owner.username,
            full_name=owner.full_name,
            home_path=owner.home_path,
            uid_number=owner.uid_number,
            gid_number=owner.gid_number,
            extra_gids=tuple(owner.extra_gids or ()),
        ),
        image_name=image.name,
        image_options=dict(image.options or {}),
        ports=tuple(Port(p.protocol, p.port, p.optional) for p in image.protocols),
        screen_width=instance.screen_width,
        screen_height=instance.screen_height,
        keyboard_layout=instance.keyboard_layout,
        experiments=tuple(_data(e, instance.owner_id) for e in instance.experiments),
        open_data=tuple(_data(e, None) for e in _open_data(open_data, now)),
        own_home=instance.home == InstanceHome.OWN,
    )


def site_for_instance(instance: Instance, base: ProvisioningSettings) -> ProvisioningSettings:
    """The site settings with the instance's cloud's own overrides."""
    return site_for_cloud(instance.cloud.config if instance.cloud is not None else None, base)


def server_spec(instance: Instance, settings: Settings, now: datetime, probe_public_key: str | None = None) -> ServerSpec:
    site = site_for_instance(instance, settings.provisioning)
    secret = settings.resolved_secret_key()
    image, flavour = instance.plan.image, instance.plan.flavour
    # The embargo is checked again: if it was brought back, the create fails rather than mount it.
    machine = boot_spec(instance, now=now, open_data=instance.open_data_experiments)
    owner = instance.owner
    session = object_session(instance)
    groups = groups_at_create(session, instance, now, settings.network.base_group) if session is not None else ()
    return ServerSpec(
        name=f"{settings.instance_name_prefix}-{instance.id}",
        instance_uid=instance.uid,
        image_ref=image.cloud_image_ref,
        flavour_ref=flavour.cloud_flavour_ref,
        user_data=render_user_data(
            machine, site=site, probe_public_key=probe_public_key,
            host_key=(host_keys.private_openssh(secret, instance.uid), host_keys.public_line(secret, instance.uid)),
        ),
        secret=instance.secret,
        metadata=render_metadata(machine),
        protocols={p.protocol.value: p.port for p in image.protocols},
        mounts=tuple(instance_mounts(machine, site=site)),
        home=home_mount(machine, site=site),
        own_home=machine.own_home,
        screen_width=instance.screen_width,
        screen_height=instance.screen_height,
        keyboard_layout=instance.keyboard_layout,
        owner_username=instance.owner.username,
        owner_uid=instance.owner.uid_number,
        owner_gid=instance.owner.gid_number,
        owner_groups=tuple(instance.owner.extra_gids or ()),
        account=(owner.unix_account, owner.unix_account_uid)
        if owner.unix_account is not None and owner.unix_account_uid is not None else None,
        cores=flavour.cores,
        memory_mb=flavour.memory_mb,
        security_groups=groups,
        jupyter_cull_idle_seconds=site.jupyter_cull_idle_seconds,
        jupyter_cull_interval_seconds=site.jupyter_cull_interval_seconds,
        jupyter_cull_connected=site.jupyter_cull_connected,
    )


def render_for_operator(session: Session, uid: str, base: ProvisioningSettings) -> str:
    """User-data of instance ``uid`` as it would be rendered now, secrets masked (``visa instances render-userdata``)."""
    instance = session.scalars(select(Instance).where(Instance.uid == uid)).first()
    if instance is None:
        raise NotFound(f"no instance {uid[:40]!r}", field="uid")
    machine = boot_spec(instance, now=datetime.now(UTC), open_data=instance.open_data_experiments)
    # The host key's private half is masked: a placeholder stands for it.
    text = render_user_data(
        machine, site=site_for_instance(instance, base), mask_secrets=True,
        host_key=(MASK, "ssh-ed25519 (derived by visa)"),
    )
    if instance.secret and instance.secret in text:  # the masking must never miss one
        raise AssertionError("a secret survived masking")
    return text
