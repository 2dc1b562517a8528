"""The emails instances send: for each kind, who receives it and what it says, read from the
database when it is sent. Importing this module registers the kinds with ``visa.mail.outbox``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy.orm import Session

from visa.catalogue.service import inactivity_limit_hours
from visa.instances.models import ExtensionRequest, ExtensionState, Instance, InstanceMember
from visa.mail.outbox import kind
from visa.settings import Settings
from visa.users.models import User

LIFETIME_WARNING = "lifetime_warning"
INACTIVITY_WARNING = "inactivity_warning"
INSTANCE_DELETED = "instance_deleted"
EXTENSION_HANDLED = "extension_handled"
EXTENSION_REQUESTED = "extension_requested"
MEMBER_ADDED = "member_added"


# Examples of what each kind gives its templates (the attributes a template may read of each):
# `visa check-config` renders a facility's replacements with them.
_AT = datetime(2026, 12, 24, 9, 30, tzinfo=UTC)
_OWNER = SimpleNamespace(username="ada", full_name="Ada Lovelace", email="ada@example.org")
_INSTANCE = SimpleNamespace(
    uid="3f2a1b4c5d6e", name="glass-analysis", created_at=_AT, terminates_at=_AT, owner=_OWNER,
    plan=SimpleNamespace(image=SimpleNamespace(name="desktop", environment="Desktop", version="2026.11"),
                         flavour=SimpleNamespace(name="esrf.medium", cores=4, memory_mb=16384)),
)
_REQUEST = SimpleNamespace(state="ACCEPTED", comment="Beamtime data still arriving", response="Granted",
                           requested_until=_AT, granted_until=_AT)
_URL = "https://visa.example.org/instances/3f2a1b4c5d6e"


def _url(settings: Settings, instance: Instance) -> str:
    return f"{settings.base_url.rstrip('/')}/instances/{instance.uid}"


def _live(instance: Instance | None) -> bool:
    return instance is not None and instance.deleted_at is None


@kind(LIFETIME_WARNING, "lifetime_warning", sample={"instance": _INSTANCE, "owner": _OWNER, "deletes_at": _AT, "url": _URL,
                                                   "booking_ends": False})
def lifetime_warning(session: Session, settings: Settings, instance_id: int, stamp: str
                     ) -> tuple[str, dict[str, Any]] | None:
    instance = session.get(Instance, instance_id)
    if not _live(instance) or instance.lifetime_warned_at is None or instance.lifetime_warned_at.isoformat() != stamp:
        return None  # deleted, or extended since
    return instance.owner.email or "", {
        "instance": instance, "owner": instance.owner, "deletes_at": instance.terminates_at,
        "url": _url(settings, instance),
        # Made from a booking that ends then: no extension, its units go to others.
        "booking_ends": instance.booked_until is not None and instance.terminates_at >= instance.booked_until,
    }


@kind(INACTIVITY_WARNING, "inactivity_warning", sample={
    "instance": _INSTANCE, "owner": _OWNER, "last_activity": _AT, "deletes_at": _AT, "limit_days": 4, "url": _URL})
def inactivity_warning(session: Session, settings: Settings, instance_id: int, stamp: str
                       ) -> tuple[str, dict[str, Any]] | None:
    instance = session.get(Instance, instance_id)
    warned = instance.inactivity_warned_at if instance is not None else None
    if not _live(instance) or warned is None or warned.isoformat() != stamp:
        return None  # deleted, or used again since
    lt = settings.lifetimes
    limit = inactivity_limit_hours(instance.owner.roles_at(warned), lt, instance.plan.flavour)
    last = instance.last_activity_at(lt.untouched_tab_hours)
    deletes_at = max(last + timedelta(hours=limit), warned + timedelta(hours=lt.inactivity_warning_hours))
    return instance.owner.email or "", {
        "instance": instance, "owner": instance.owner, "last_activity": last, "deletes_at": deletes_at,
        "limit_days": round(limit / 24, 1) if limit % 24 else limit // 24, "url": _url(settings, instance),
    }


@kind(INSTANCE_DELETED, "instance_deleted", sample={"instance": _INSTANCE, "owner": _OWNER, "reason": "lifetime",
                                                   "limit_days": 4})
def instance_deleted(session: Session, settings: Settings, instance_id: int, reason: str
                     ) -> tuple[str, dict[str, Any]] | None:
    instance = session.get(Instance, instance_id)
    if instance is None:
        return None
    limit = inactivity_limit_hours(instance.owner.roles_at(instance.state_changed_at or instance.created_at),
                                   settings.lifetimes, instance.plan.flavour)
    return instance.owner.email or "", {
        "instance": instance, "owner": instance.owner, "reason": reason,
        "limit_days": round(limit / 24, 1) if limit % 24 else limit // 24,
    }


@kind(EXTENSION_HANDLED, "extension_handled", sample={"instance": _INSTANCE, "owner": _OWNER, "request": _REQUEST,
                                                     "url": _URL})
def extension_handled(session: Session, settings: Settings, request_id: int, stamp: str
                      ) -> tuple[str, dict[str, Any]] | None:
    request = session.get(ExtensionRequest, request_id)
    if request is None or request.state == ExtensionState.PENDING:
        return None
    instance = session.get(Instance, request.instance_id)
    if instance is None:
        return None
    return instance.owner.email or "", {
        "instance": instance, "owner": instance.owner, "request": request, "url": _url(settings, instance),
    }


@kind(EXTENSION_REQUESTED, "extension_requested", sample={
    "admin": _OWNER, "instance": _INSTANCE, "owner": _OWNER, "request": _REQUEST, "url": _URL})
def extension_requested(session: Session, settings: Settings, request_id: int, stamp: str
                        ) -> tuple[str, dict[str, Any]] | None:
    """To one administrator (``stamp`` is their user id), while the request still waits."""
    request = session.get(ExtensionRequest, request_id)
    admin = session.get(User, int(stamp)) if stamp.isdigit() else None
    if request is None or request.state != ExtensionState.PENDING or admin is None or not admin.active:
        return None
    instance = session.get(Instance, request.instance_id)
    if not _live(instance):
        return None
    return admin.email or "", {
        "admin": admin, "instance": instance, "owner": instance.owner, "request": request,
        "url": f"{settings.base_url.rstrip('/')}/admin/extensions",
    }


@kind(MEMBER_ADDED, "member_added", sample={"instance": _INSTANCE, "owner": _OWNER, "member": _OWNER, "role": "user",
                                           "url": _URL})
def member_added(session: Session, settings: Settings, member_id: int, stamp: str
                 ) -> tuple[str, dict[str, Any]] | None:
    member = session.get(InstanceMember, member_id)
    if member is None:
        return None  # removed again before the email left
    instance = session.get(Instance, member.instance_id)
    if not _live(instance):
        return None
    return member.user.email or "", {
        "instance": instance, "owner": instance.owner, "member": member.user, "role": member.role.value.lower(),
        "url": _url(settings, instance),
    }
