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


def _source(template: str, proposal: str, beamline: str, kind: str, field: str) -> str:
    source = template.format(proposal=proposal, beamline=beamline)
    if kind == "bind":
        names.absolute_path(source, field)
    return source


def data_mounts(
    instance: Instance,
    *,
    site: ProvisioningSettings,
    now: datetime,
    open_data: Sequence[Experiment | Proposal] = (),
) -> list[DataMount]:
    """Every data mount of the instance, member experiments first, in a stable order."""
    kind = site.mount_type
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
        proposal = names.path_component(experiment.proposal.identifier, "proposal")
        beamline = names.path_component(experiment.instrument.name, "beamline")
        if (proposal, beamline) in seen:
            continue
        seen.add((proposal, beamline))
        raw = MountSpec(
            source=_source(site.raw_mount_template, proposal, beamline, kind, "raw_mount_template"),
            target=f"{site.data_root}/{proposal}/{beamline}",
            read_only=True,
            kind=kind,
        )
        processed = MountSpec(
            source=_source(
                site.processed_mount_template, proposal, beamline, kind, "processed_mount_template"
            ),
            target=f"{site.processed_root}/{proposal}/{beamline}",
            read_only=False,
            kind=kind,
        )
        mounts.append(DataMount(raw, proposal, beamline, "raw"))
        mounts.append(DataMount(processed, proposal, beamline, "processed"))

    for experiment in sorted(_open_data_experiments(open_data, now), key=lambda e: e.id):
        proposal = names.path_component(experiment.proposal.identifier, "proposal")
        beamline = names.path_component(experiment.instrument.name, "beamline")
        if (proposal, beamline) in seen:
            continue
        seen.add((proposal, beamline))
        raw = MountSpec(
            source=_source(site.raw_mount_template, proposal, beamline, kind, "raw_mount_template"),
            target=f"{site.data_root}/{proposal}/{beamline}",
            read_only=True,
            kind=kind,
        )
        mounts.append(DataMount(raw, proposal, beamline, "open"))
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
