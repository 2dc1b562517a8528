"""What users can get: images (environments), flavours (sizes), plans and their limits."""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from visa.db import Base
from visa.experiments.models import Instrument
from visa.types import JsonDict, enum_column
from visa.users.models import Role


class Protocol(enum.StrEnum):
    VNC = "VNC"
    JUPYTER = "JUPYTER"
    RDP = "RDP"
    SSH = "SSH"


class AutoAccept(enum.StrEnum):
    """Who gets lifetime extensions accepted without an admin."""

    ALL = "ALL"
    STAFF = "STAFF"
    NONE = "NONE"


class Image(Base):
    """An environment users pick: Desktop, Bliss, JupyterLab…"""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    environment: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    icon: Mapped[str | None] = mapped_column(String(64))
    cloud_image_ref: Mapped[str] = mapped_column(String(255))
    cloud_id: Mapped[int | None] = mapped_column(ForeignKey("clouds.id", ondelete="RESTRICT"))
    visible: Mapped[bool] = mapped_column(Boolean, default=True)
    autoaccept_extension: Mapped[AutoAccept] = mapped_column(enum_column(AutoAccept), default=AutoAccept.NONE)
    options: Mapped[dict[str, Any]] = mapped_column(JsonDict, default=dict)
    # Members other than the owner connect only while the owner is connected (staff exempt);
    # an instance's own setting overrides it (``Instance.unrestricted_member_access``).
    members_need_owner: Mapped[bool] = mapped_column(Boolean, default=False)
    # Web applications the machine serves besides JupyterLab ({"name": ..., "port": ...}), each
    # on a user-content host of its own (``visa.gateway.webservice``).
    web_services: Mapped[list[dict[str, Any]]] = mapped_column(JsonDict, default=list)

    protocols: Mapped[list[ImageProtocol]] = relationship(
        back_populates="image", cascade="all, delete-orphan", lazy="selectin", order_by="ImageProtocol.port"
    )

    def port_of(self, protocol: Protocol) -> int | None:
        return next((p.port for p in self.protocols if p.protocol == protocol), None)

    def web_service_port(self, name: str) -> int | None:
        return next((int(w["port"]) for w in self.web_services or [] if w.get("name") == name), None)

    def __repr__(self) -> str:
        return f"<Image {self.name!r} {self.version}>"


class ImageProtocol(Base):
    """A service the machine offers and the port it answers on (VNC 5901, Jupyter 8888…)."""

    __tablename__ = "image_protocols"
    __table_args__ = (UniqueConstraint("image_id", "protocol"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    protocol: Mapped[Protocol] = mapped_column(enum_column(Protocol))
    port: Mapped[int] = mapped_column(Integer)
    optional: Mapped[bool] = mapped_column(Boolean, default=False)

    image: Mapped[Image] = relationship(back_populates="protocols")


class Flavour(Base):
    """A machine size: cores, memory and GPUs, and the cloud flavour behind it."""

    __tablename__ = "flavours"
    __table_args__ = (
        CheckConstraint("cores > 0", name="cores_positive"),
        CheckConstraint("memory_mb > 0", name="memory_positive"),
        CheckConstraint("gpu_count >= 0", name="gpu_count_non_negative"),
        CheckConstraint("idle_warning_hours > 0", name="idle_warning_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    cores: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    gpu_kind: Mapped[str | None] = mapped_column(String(64))
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)
    cloud_flavour_ref: Mapped[str] = mapped_column(String(255))
    cloud_id: Mapped[int | None] = mapped_column(ForeignKey("clouds.id", ondelete="RESTRICT"))
    visible: Mapped[bool] = mapped_column(Boolean, default=True)
    # Idle this long, a machine of this size is warned (and deleted after the usual notice),
    # even when the owner's inactivity limit is longer; None: that limit alone.
    idle_warning_hours: Mapped[int | None] = mapped_column(Integer)

    # User groups (by name, as the files give them) that may use this flavour, beside its
    # limits' roles and instruments; and each group's maximum lifetime in hours.
    limit_groups: Mapped[list[str]] = mapped_column(JsonDict, default=list)
    group_lifetimes: Mapped[dict[str, int]] = mapped_column(JsonDict, default=dict)
    limits: Mapped[list[FlavourLimit]] = relationship(
        back_populates="flavour", cascade="all, delete-orphan", lazy="selectin"
    )
    lifetimes: Mapped[list[FlavourLifetime]] = relationship(
        back_populates="flavour", cascade="all, delete-orphan", lazy="selectin"
    )

    def __repr__(self) -> str:
        return f"<Flavour {self.name!r} {self.cores}c/{self.memory_mb}MB>"


class FlavourLimit(Base):
    """Restricts a flavour to experiments on an instrument, or to holders of a role.

    A flavour with no limits is open to all. With limits, a user qualifies when one of
    their roles is listed, or one of the chosen experiments is on a listed instrument.
    """

    __tablename__ = "flavour_limits"
    __table_args__ = (
        CheckConstraint("(instrument_id IS NULL) <> (role IS NULL)", name="one_target"),
        UniqueConstraint("flavour_id", "instrument_id", "role"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    flavour_id: Mapped[int] = mapped_column(ForeignKey("flavours.id", ondelete="CASCADE"), index=True)
    instrument_id: Mapped[int | None] = mapped_column(ForeignKey("instruments.id", ondelete="CASCADE"))
    role: Mapped[Role | None] = mapped_column(enum_column(Role))

    flavour: Mapped[Flavour] = relationship(back_populates="limits")
    instrument: Mapped[Instrument | None] = relationship(lazy="joined")


class FlavourLifetime(Base):
    """Maximum lifetime on a flavour for holders of a role (overrides the default)."""

    __tablename__ = "flavour_lifetimes"
    __table_args__ = (
        UniqueConstraint("flavour_id", "role"),
        CheckConstraint("lifetime_hours > 0", name="lifetime_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    flavour_id: Mapped[int] = mapped_column(ForeignKey("flavours.id", ondelete="CASCADE"), index=True)
    role: Mapped[Role | None] = mapped_column(enum_column(Role))
    lifetime_hours: Mapped[int] = mapped_column(Integer)

    flavour: Mapped[Flavour] = relationship(back_populates="lifetimes")


class Plan(Base):
    """An image on a flavour: what a user actually picks. One plan is the preset."""

    __tablename__ = "plans"
    __table_args__ = (UniqueConstraint("image_id", "flavour_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    flavour_id: Mapped[int] = mapped_column(ForeignKey("flavours.id", ondelete="CASCADE"))
    preset: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Machines kept booted and unassigned, by time of day at the site: [{"from": "07:00", "to":
    # "19:00", "count": 2}, ...] (``catalogue.service.warm_wanted``); empty: none.
    warm: Mapped[list[dict[str, Any]]] = mapped_column(JsonDict, default=list, server_default=text("'[]'"))

    image: Mapped[Image] = relationship(lazy="joined")
    flavour: Mapped[Flavour] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"<Plan {self.id} image={self.image_id} flavour={self.flavour_id}>"


class NetworkRule(Base):
    """Security groups given to a server while its conditions hold (``network-rules`` catalogue entries).

    Conditions are lists of names, as in the files: empty lists are no condition. Names (not ids)
    are kept for flavours and instruments: a rule may name an instrument before the user office's
    import brings it, and what a rule names is matched as the files say it.
    """

    __tablename__ = "network_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    security_groups: Mapped[list[str]] = mapped_column(JsonDict, default=list)
    cloud_id: Mapped[int | None] = mapped_column(ForeignKey("clouds.id", ondelete="CASCADE"))
    roles: Mapped[list[str]] = mapped_column(JsonDict, default=list)
    groups: Mapped[list[str]] = mapped_column(JsonDict, default=list)
    flavours: Mapped[list[str]] = mapped_column(JsonDict, default=list)
    instruments: Mapped[list[str]] = mapped_column(JsonDict, default=list)
    beamtime: Mapped[bool] = mapped_column(Boolean, default=False)

    def __repr__(self) -> str:
        return f"<NetworkRule {self.name!r} -> {self.security_groups}>"
