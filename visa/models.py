"""Imports every model so the metadata is complete (Alembic, create_all)."""

from visa.announcements.models import NotificationAck, SystemNotification
from visa.audit.models import AuditEvent
from visa.catalogue.models import Flavour, FlavourLifetime, FlavourLimit, Image, ImageProtocol, Plan
from visa.clouds.models import Cloud
from visa.db import Base
from visa.experiments.models import (
    Experiment,
    Instrument,
    Proposal,
    experiment_members,
    instrument_scientists,
)
from visa.instances.models import (
    ConnectToken,
    ExtensionRequest,
    Instance,
    InstanceCommand,
    InstanceMember,
    InstanceThumbnail,
    instance_experiments,
)
from visa.mail.models import SentEmail
from visa.scheduler.models import SchedulerLease
from visa.usage.models import UsageSample
from visa.users.models import ApiToken, LoginSession, RoleGrant, User

__all__ = [
    "ApiToken",
    "AuditEvent",
    "Base",
    "Cloud",
    "ConnectToken",
    "Experiment",
    "ExtensionRequest",
    "Flavour",
    "FlavourLifetime",
    "FlavourLimit",
    "Image",
    "ImageProtocol",
    "Instance",
    "InstanceCommand",
    "InstanceMember",
    "InstanceThumbnail",
    "Instrument",
    "LoginSession",
    "NotificationAck",
    "Plan",
    "Proposal",
    "RoleGrant",
    "SchedulerLease",
    "SentEmail",
    "SystemNotification",
    "UsageSample",
    "User",
    "experiment_members",
    "instance_experiments",
    "instrument_scientists",
]
