"""Which experiment data a machine sees, and where.

For each experiment of the instance whose members include the owner: its raw data
read-only at ``<data_root>/<proposal>/<beamline>`` and a processed-data area the owner
may write at ``<processed_root>/<proposal>/<beamline>``. Open data (embargo over) is
mounted read-only only when asked for. Experiments the owner is not a member of give
nothing, even when attached to the instance.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import object_session

from visa.clouds.base import MountSpec
from visa.errors import Forbidden
from visa.experiments.models import Experiment, Proposal
from visa.instances.models import Instance
from visa.provisioning import names
from visa.settings import ProvisioningSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataMount:
    """A mount and why it is there."""

    spec: MountSpec
    proposal: str
    beamline: str
    purpose: str  # "raw", "processed" or "open"


def _open_data_experiments(requested: Iterable[Experiment | Proposal], now: datetime) -> list[Experiment]:
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


def _place(experiment: Experiment) -> tuple[str, str]:
    """(proposal, beamline) as path components: refused if a name could escape its directory."""
    return (
        names.path_component(experiment.proposal.identifier, "proposal"),
        names.path_component(experiment.instrument.name, "beamline"),
    )


def _mount(site: ProvisioningSettings, template_field: str, root: str, place: tuple[str, str],
           *, read_only: bool) -> MountSpec:
    proposal, beamline = place
    kind = site.mount_type
    source = getattr(site, template_field).format(proposal=proposal, beamline=beamline)
    if kind == "bind":
        names.absolute_path(source, template_field)
    return MountSpec(source=source, target=f"{root}/{proposal}/{beamline}", read_only=read_only, kind=kind)


def data_mounts(
    instance: Instance,
    *,
    site: ProvisioningSettings,
    now: datetime,
    open_data: Sequence[Experiment | Proposal] = (),
) -> list[DataMount]:
    """Every data mount of the instance, member experiments first, in a stable order."""
    owner_id = instance.owner_id
    mounts: list[DataMount] = []
    seen: set[tuple[str, str]] = set()

    for experiment in sorted(instance.experiments, key=lambda e: e.id):
        if owner_id not in {m.id for m in experiment.members}:
            # Attached by someone else (support, admin): the owner gets none of its data.
            log.warning(
                "instance %s: owner is not a member of experiment %s, not mounted",
                instance.uid,
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

    for experiment in sorted(_open_data_experiments(open_data, now), key=lambda e: e.id):
        place = _place(experiment)
        if place in seen:
            continue
        seen.add(place)
        mounts.append(DataMount(_mount(site, "raw_mount_template", site.data_root, place, read_only=True),
                                *place, "open"))
    return mounts


def instance_mounts(
    instance: Instance,
    *,
    site: ProvisioningSettings,
    now: datetime,
    open_data: Sequence[Experiment | Proposal] = (),
) -> list[MountSpec]:
    """The instance's data mounts as ``MountSpec`` (for ``ServerSpec.mounts``)."""
    return [m.spec for m in data_mounts(instance, site=site, now=now, open_data=open_data)]


def fstab_entry(spec: MountSpec, site: ProvisioningSettings) -> list[str]:
    """One cloud-init ``mounts`` entry: [spec, file, vfstype, options, freq, passno]."""
    access = "ro" if spec.read_only else "rw"
    if spec.kind == "bind":
        return [spec.source, spec.target, "none", f"bind,{access},nofail", "0", "0"]
    if spec.kind == "ceph":
        return [spec.source, spec.target, "ceph", f"{access},{site.ceph_options}", "0", "0"]
    return [spec.source, spec.target, "nfs", f"{access},{site.nfs_options}", "0", "0"]
