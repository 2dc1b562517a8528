"""Imports every model so the metadata is complete (Alembic, create_all), and the declarations
of what a flush changed (visa.db's session hooks run them), so every process has them."""

from visa.announcements.models import NotificationAck, SystemNotification
from visa.audit.models import AuditEvent
from visa.bookings.models import Booking, booking_instances
from visa.catalogue.models import (
    Flavour,
    FlavourLifetime,
    FlavourLimit,
    Image,
    ImageProtocol,
    NetworkRule,
    Plan,
)
from visa.clouds.models import Cloud
from visa.db import Base
from visa.experiments.models import (
    Experiment,
    Instrument,
    Proposal,
    experiment_members,
    instrument_scientists,
)
from visa.instances.changes import changed  # noqa: F401  (declared to visa.db's session hooks)
from visa.instances.models import (
    AttributeDefinition,
    ConnectToken,
    ExtensionRequest,
    Instance,
    InstanceAttribute,
    InstanceCommand,
    InstanceMember,
    InstanceStatePeriod,
    InstanceThumbnail,
    instance_experiments,
)
from visa.mail.models import SentEmail
from visa.scheduler.models import SchedulerLease
from visa.sharing.models import Invitation, SupportRequest, ViewLink
from visa.usage.models import UsageSample
from visa.users.models import ApiToken, GroupMembership, LoginSession, RoleGrant, User, UserGroup

__all__ = [
    "ApiToken",
    "AttributeDefinition",
    "AuditEvent",
    "Base",
    "Booking",
    "Cloud",
    "ConnectToken",
    "Experiment",
    "ExtensionRequest",
    "Flavour",
    "FlavourLifetime",
    "FlavourLimit",
    "GroupMembership",
    "Image",
    "ImageProtocol",
    "Instance",
    "InstanceAttribute",
    "InstanceCommand",
    "InstanceMember",
    "InstanceStatePeriod",
    "InstanceThumbnail",
    "Invitation",
    "Instrument",
    "LoginSession",
    "NetworkRule",
    "NotificationAck",
    "Plan",
    "Proposal",
    "RoleGrant",
    "SchedulerLease",
    "SupportRequest",
    "SentEmail",
    "SystemNotification",
    "UsageSample",
    "User",
    "UserGroup",
    "ViewLink",
    "booking_instances",
    "experiment_members",
    "instance_experiments",
    "instrument_scientists",
]
