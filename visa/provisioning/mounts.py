"""Which experiment data a machine sees, and where.

For each experiment of the machine whose members include the owner: its raw data
read-only at ``<data_root>/<proposal>/<beamline>`` and a processed-data area the owner
may write at ``<processed_root>/<proposal>/<beamline>``. Open data (embargo over) is
mounted read-only only when asked for (the embargo is checked where the request is built,
``visa.instances.spec``). Experiments the owner is not a member of give nothing, even when
attached to the instance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from visa.clouds.base import MountSpec
from visa.errors import InvalidInput
from visa.provisioning import names
from visa.provisioning.sources import check_home_template, home_source_inside
from visa.provisioning.spec import BootSpec, ExperimentData
from visa.settings import ProvisioningSettings, system_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataMount:
    """A mount and why it is there."""

    spec: MountSpec
    proposal: str
    beamline: str
    purpose: str  # "raw", "processed" or "open"


def _place(experiment: ExperimentData) -> tuple[str, str]:
    """(proposal, beamline) as path components: refused if a name could escape its directory."""
    return (
        names.path_component(experiment.proposal, "proposal"),
        names.path_component(experiment.beamline, "beamline"),
    )


def _mount(site: ProvisioningSettings, template_field: str, root: str, place: tuple[str, str],
           *, read_only: bool) -> MountSpec:
    proposal, beamline = place
    kind = site.mount_type
    source = getattr(site, template_field).format(proposal=proposal, beamline=beamline)
    if kind == "bind":
        names.absolute_path(source, template_field)
    return MountSpec(source=source, target=f"{root}/{proposal}/{beamline}", read_only=read_only, kind=kind)


def data_mounts(machine: BootSpec, *, site: ProvisioningSettings) -> list[DataMount]:
    """Every data mount of the machine, member experiments first, in a stable order."""
    mounts: list[DataMount] = []
    seen: set[tuple[str, str]] = set()

    for experiment in sorted(machine.experiments, key=lambda e: e.id):
        if not experiment.owner_is_member:
            # Attached by someone else (support, admin): the owner gets none of its data.
            log.warning(
                "instance %s: owner is not a member of experiment %s, not mounted",
                machine.uid,
                experiment.id,
            )
            continue
        place = _place(experiment)
        if place in seen:
            continue
        seen.add(place)
        raw = _mount(site, "raw_mount_template", site.data_root, place, read_only=True)
        processed = _mount(site, "processed_mount_template", site.processed_root, place, read_only=False)
        mounts.append(DataMount(raw, *place, "raw"))
        mounts.append(DataMount(processed, *place, "processed"))

    for experiment in sorted(machine.open_data, key=lambda e: e.id):
        place = _place(experiment)
        if place in seen:
            continue
        seen.add(place)
        mounts.append(DataMount(_mount(site, "raw_mount_template", site.data_root, place, read_only=True),
                                *place, "open"))
    return mounts


def instance_mounts(machine: BootSpec, *, site: ProvisioningSettings) -> list[MountSpec]:
    """The machine's data mounts as ``MountSpec`` (for ``ServerSpec.mounts``)."""
    return [m.spec for m in data_mounts(machine, site=site)]


def home_path(machine: BootSpec, site: ProvisioningSettings) -> str:
    """Where the owner's home is in the machine: the account source's, else under ``home_root``.
    Never a system directory nor a home root itself (a value stored before homes were confined
    is refused here too: a home share mounted over /etc or /usr/local would be root's)."""
    username = names.username(machine.owner.username, "username")
    home = names.absolute_path(machine.owner.home_path or f"{site.home_root}/{username}", "home_path")
    if (sysdir := system_dir(home)) is not None:
        raise InvalidInput(f"the home {home} of {username} is a system directory ({sysdir}) or inside one",
                           field="home_path")
    if home in ("/home", site.home_root):
        raise InvalidInput(f"the home of {username} is a home root ({home}), not a directory inside one",
                           field="home_path")
    return home


def home_mount(machine: BootSpec, *, site: ProvisioningSettings) -> MountSpec | None:
    """The owner's persistent home share at their home, when the site has one
    (``home_mount_template``); a source outside ``home_mount_root`` is refused. None for a
    machine with a home of its own: what others leave in it must not reach the owner's other machines."""
    template, root = site.home_mount_template, site.home_mount_root
    if not template or machine.own_home:
        return None
    try:
        check_home_template(template, root)
    except ValueError as exc:
        raise InvalidInput(f"provisioning.home_mount_template: {exc}", field="provisioning.home_mount_template") from None
    assert root is not None
    owner = machine.owner
    username = names.username(owner.username, "username")
    if "{uid}" in template and owner.uid_number is None:
        raise InvalidInput(f"{username} has no uid, which their home share needs", field="uid_number")
    source = template.format(username=username, uid=owner.uid_number if owner.uid_number is not None else "")
    if not home_source_inside(source, root):
        raise InvalidInput(f"the home share of {username} would be outside {root}",
                           field="provisioning.home_mount_template")
    if site.mount_type == "bind":
        names.absolute_path(source, "provisioning.home_mount_template")
    return MountSpec(source=source, target=home_path(machine, site), read_only=False, kind=site.mount_type)


def identity_needed(site: ProvisioningSettings, require: str, *, data: bool) -> bool:
    """Whether a machine must have its owner's uid and gid: shared storage (its data, a home
    share) is owned by the facility's uids, so files written under another uid are not the owner's.
    ``require`` is ``posix.require_uid`` (auto: when the storage is nfs or ceph)."""
    if require == "never" or not (data or site.home_mount_template):
        return False
    return require == "always" or site.mount_type in ("nfs", "ceph")


def fstab_entry(spec: MountSpec, site: ProvisioningSettings) -> list[str]:
    """One cloud-init ``mounts`` entry: [spec, file, vfstype, options, freq, passno]."""
    access = "ro" if spec.read_only else "rw"
    if spec.kind == "bind":
        return [spec.source, spec.target, "none", f"bind,{access},nofail", "0", "0"]
    if spec.kind == "ceph":
        return [spec.source, spec.target, "ceph", f"{access},{site.ceph_options}", "0", "0"]
    return [spec.source, spec.target, "nfs", f"{access},{site.nfs_options}", "0", "0"]
