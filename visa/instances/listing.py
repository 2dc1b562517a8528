"""Lists of instances as the API shows them, read as rows: the home list and the admin pages.

Loaded through the ORM, a page of 50 instances builds some 600 objects (the instances, their
owners, plans, images, flavours, clouds, members, experiments with their proposals and
instruments) to show a dozen fields of each. Here the same fields are read as plain rows: the
instances with their image's protocols, their experiments and open data in a second query
(with, for the admin pages, their members), turned into the same
``InstanceOut`` / ``AdminInstanceOut`` that ``instance_out`` gives (tests/instances/test_listing.py
compares the two field by field).
Pages that also ask the policy about each instance (the home page's buttons) ask it of the same
rows (``RowTarget``, ``policy_targets``): the rules read no more than the row holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, any_, bindparam, cast, func, literal, select, union_all
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.catalogue.models import Flavour, Image, ImageProtocol, Plan
from visa.clouds.models import Cloud
from visa.experiments.models import Experiment, Instrument, Proposal
from visa.instances.models import (
    Instance,
    InstanceConnection,
    InstanceHome,
    InstanceMember,
    MemberRole,
    instance_experiments,
    instance_open_data,
)
from visa.instances.schemas import InstanceQuery
from visa.instances.service import search_instance_ids
from visa.paging import Total
from visa.policy.roles import ActorKind
from visa.users.models import User


@dataclass
class ExperimentRow:
    id: int
    external_id: str
    proposal: str
    instrument: str


@dataclass
class MemberRow:
    user_id: int
    username: str
    full_name: str
    role: MemberRole


@dataclass
class InstanceRow:
    """The fields of an instance that its list entry shows."""

    row: Any  # the instances query's row: see _COLUMNS
    role: MemberRole | None = None  # the caller's member role
    protocols: list[str] = field(default_factory=list)
    experiments: list[ExperimentRow] = field(default_factory=list)
    open_data: list[ExperimentRow] = field(default_factory=list)
    members: list[MemberRow] = field(default_factory=list)  # admin pages only


_COLUMNS = (
    Instance.id, Instance.uid, Instance.name, Instance.state, Instance.comments,
    Instance.screen_width, Instance.screen_height, Instance.keyboard_layout, Instance.clipboard_to_viewers,
    Instance.error_message,
    Instance.created_at, Instance.terminates_at, Instance.last_seen_at,
    Instance.state_changed_at, Instance.deleted_at, Instance.cloud_server_id, Instance.address,
    User.username.label("owner_username"), User.full_name.label("owner_full_name"),
    Plan.id.label("plan_id"), Plan.image_id,
    Image.name.label("image_name"), Image.environment.label("image_environment"),
    Image.version.label("image_version"),
    Flavour.name.label("flavour_name"), Flavour.cores.label("flavour_cores"),
    Flavour.memory_mb.label("flavour_memory_mb"), Flavour.gpu_kind.label("flavour_gpu_kind"),
    Flavour.gpu_count.label("flavour_gpu_count"),
    Cloud.name.label("cloud_name"),
    # What the policy reads of an instance besides its members (RowTarget).
    Instance.owner_id, Instance.home, Instance.unrestricted_member_access,
    Image.members_need_owner.label("image_members_need_owner"),
)


def _instances() -> Any:
    # The image's protocols in the same row: "JUPYTER,VNC" (string_agg, group_concat).
    protocols = (
        select(func.aggregate_strings(ImageProtocol.protocol, ","))
        .where(ImageProtocol.image_id == Plan.image_id).scalar_subquery().label("protocols")
    )
    return (
        select(*_COLUMNS, protocols)
        .join(User, User.id == Instance.owner_id)
        .join(Plan, Plan.id == Instance.plan_id)
        .join(Image, Image.id == Plan.image_id)
        .join(Flavour, Flavour.id == Plan.flavour_id)
        .join(Cloud, Cloud.id == Instance.cloud_id)
    )


def _among(column: Any, name: str, array: bool) -> Any:
    # PostgreSQL: "= ANY(%(ids)s)", one array parameter, so the statement's text is the same for
    # every page and psycopg prepares it once; elsewhere "IN (?, ?, ...)".
    if array:
        return column == any_(bindparam(name, type_=ARRAY(Integer)))
    return column.in_(bindparam(name, expanding=True))


def _experiments(link: Any, kind: str, array: bool) -> Any:
    return (
        select(link.c.instance_id, literal(kind).label("kind"), Experiment.id.label("experiment_id"),
               Experiment.external_id, Proposal.identifier, Instrument.name)
        .join(Experiment, Experiment.id == link.c.experiment_id)
        .join(Proposal, Proposal.id == Experiment.proposal_id)
        .join(Instrument, Instrument.id == Experiment.instrument_id)
        .where(_among(link.c.instance_id, "ids", array))
    )


def _statements(array: bool) -> dict[str, Any]:
    return {
        "home": (
            _instances().add_columns(InstanceMember.role)
            .join(InstanceMember, InstanceMember.instance_id == Instance.id)
            .where(InstanceMember.user_id == bindparam("user_id"), Instance.deleted_at.is_(None))
            .order_by(Instance.created_at.desc(), Instance.id.desc())
        ),
        "page": _instances().where(_among(Instance.id, "ids", array)),
        # Which of these instances' owners have a live connection now (the owner-presence rule).
        "owners_live": (
            select(InstanceConnection.instance_id).distinct()
            .join(Instance, Instance.id == InstanceConnection.instance_id)
            .where(_among(InstanceConnection.instance_id, "ids", array),
                   InstanceConnection.user_id == Instance.owner_id, InstanceConnection.expires_at > bindparam("now"))
        ),
        "experiments": union_all(
            _experiments(instance_experiments, "e", array), _experiments(instance_open_data, "o", array)
        ).order_by("experiment_id"),
        # An admin page's experiments, open data and members in one statement (one round trip).
        "details": union_all(
            _experiments(instance_experiments, "e", array), _experiments(instance_open_data, "o", array),
            select(InstanceMember.instance_id, literal("m").label("kind"), InstanceMember.user_id, User.username,
                   User.full_name, cast(InstanceMember.role, String))
            .join(User, User.id == InstanceMember.user_id)
            .where(_among(InstanceMember.instance_id, "ids", array)),
        ).order_by("kind", "experiment_id"),
    }


# Built once: making a statement of this size costs about as much as running it.
_STATEMENTS = {True: _statements(array=True), False: _statements(array=False)}


def _read(session: Session, name: str, **params: Any) -> Any:
    # Plain rows through the session's connection (its transaction), after its pending changes.
    session.flush()
    connection = session.connection()
    return connection.execute(_STATEMENTS[connection.dialect.name == "postgresql"][name], params)


def _complete(session: Session, items: list[InstanceRow], *, members: bool = False) -> list[InstanceRow]:
    """Add the experiments and open data (one query) and the protocols (in the row), and the members (one query)."""
    if not items:
        return items
    by_id = {item.row.id: item for item in items}
    ids = list(by_id)
    for instance_id, kind, *fields in _read(session, "details" if members else "experiments", ids=ids):
        item = by_id[instance_id]
        if kind == "m":
            user_id, username, full_name, role = fields
            item.members.append(MemberRow(user_id, username, full_name, MemberRole(role)))
        else:
            (item.experiments if kind == "e" else item.open_data).append(ExperimentRow(*fields))
    for item in items:
        item.protocols = sorted(item.row.protocols.split(",")) if item.row.protocols else []
    return items


def home_rows(actor: Actor, session: Session) -> list[InstanceRow]:
    """The actor's own instances and those shared with them, newest first, with the actor's role
    (the same instances as ``service.list_instances``)."""
    if actor.user is None:
        return []
    rows = _read(session, "home", user_id=actor.user.id)
    return _complete(session, [InstanceRow(row=r, role=r.role) for r in rows])


def page_rows(actor: Actor, session: Session, ids: Iterable[int]) -> list[InstanceRow]:
    """The given instances (an admin page, ids already checked by the search), in that order,
    with their members and the actor's own role among them."""
    ids = list(ids)
    if not ids:
        return []
    found = {r.id: InstanceRow(row=r) for r in _read(session, "page", ids=ids)}
    items = _complete(session, [found[i] for i in ids if i in found], members=True)
    me = actor.user.id if actor.kind is ActorKind.USER and actor.user is not None else None
    for item in items:
        item.role = next((m.role for m in item.members if m.user_id == me), None)
    return items


def search_rows(actor: Actor, session: Session, q: InstanceQuery) -> tuple[list[InstanceRow], Total]:
    """``service.search_instances`` (its checks, filters, sort and count) read as rows."""
    ids, total = search_instance_ids(actor, session, q)
    return page_rows(actor, session, ids), total


@dataclass
class RowTarget:
    """An instance of a list as the policy table reads it (the protocols of ``visa.policy.rules``),
    so that a page asks the same rules of rows as of models (tests/instances/test_listing.py
    compares the answers for every action a page asks). The caller's own membership is the only
    one known: the rules read no other (``member_role``). The experiments, which only the support
    rules read, are loaded if a rule asks for them."""

    item: InstanceRow
    user_id: int | None
    owner_live: bool  # the owner had a live connection when the list was read
    session: Session

    @property
    def members(self) -> list[MemberRow]:
        if self.item.role is None or self.user_id is None:
            return []
        return [MemberRow(self.user_id, "", "", self.item.role)]

    @property
    def experiments(self) -> Any:
        instance = self.session.get(Instance, self.item.row.id)
        return instance.experiments if instance is not None else []

    @property
    def members_need_owner(self) -> bool:
        unrestricted = self.item.row.unrestricted_member_access
        if unrestricted is not None:
            return not unrestricted
        return bool(self.item.row.image_members_need_owner)

    @property
    def members_may_act(self) -> bool:
        return bool(self.item.row.home != InstanceHome.SHARED)

    def owner_connected(self, now: datetime) -> bool:
        return self.owner_live


def policy_targets(actor: Actor, session: Session, items: list[InstanceRow], now: datetime) -> list[RowTarget]:
    """The rows of a list as policy targets, with whether each owner is connected now (one query,
    and none when no row's rules can ask it: the caller owns them all, or members need no owner)."""
    user_id = actor.user.id if actor.kind is ActorKind.USER and actor.user is not None else None
    asked = [i.row.id for i in items if i.role is not MemberRole.OWNER]
    live: set[int] = set()
    if asked:
        live = {r.instance_id for r in _read(session, "owners_live", ids=asked, now=now)}
    return [RowTarget(i, user_id, i.row.id in live, session) for i in items]
