"""Who may do what, as one table of small rules. What is not listed is denied.

Every service function starts with ``require(actor, action, target)``; the authorisation
matrix test and docs/permissions.md read this same table. Instance rules receive the
instance; global rules receive ``None``. A rule list allows when any of its rules does;
``a & b`` needs both (a grant narrowed by a token's scope).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from visa.errors import Forbidden, NotFound
from visa.policy.roles import Role
from visa.policy.rules import (
    AnyUser,
    HasRole,
    IdpScope,
    Interactive,
    LacksRole,
    Member,
    MembersMayAct,
    OwnerPresent,
    PolicyActor,
    Requester,
    Rule,
    ScientistOf,
    SupportFor,
    System,
    TokenScope,
)

# What an identity provider's access token may be granted for (``Actor.idp_scopes``); the
# provider's own scope name for each is a setting (``oidc.token_scope``).
MINT_TOKENS = "tokens:create"

# Personal API token scopes: "api" reads and writes, "api:read" only reads.
WRITE = TokenScope("api")

ADMIN = HasRole(Role.ADMIN)
STAFF = HasRole(Role.ADMIN, Role.STAFF)
# Members who are not the owner.
OTHERS = Member("USER", "GUEST", "SUPPORT")

POLICY: dict[str, list[Rule]] = {
    # global actions
    "manage_users": [System(), ADMIN],
    # Which host account a user's local sessions run as: the host's operators alone (the CLI).
    "record_unix_account": [System()],
    "manage_roles": [System(), ADMIN],
    # User groups and who is in them (an identity provider's claim gives its own at login).
    "manage_groups": [System(), ADMIN],
    "manage_catalogue": [System(), ADMIN],
    "manage_clouds": [System(), ADMIN],
    "import_experiments": [System(), ADMIN],
    # Who supports each instrument's users (also set by an import that states it).
    "manage_instruments": [System(), ADMIN],
    "view_all_instances": [System(), ADMIN],
    # Instance attributes: the keys and their labels; values on instances are "instance.attributes".
    "manage_attributes": [System(), ADMIN],
    "view_audit": [System(), ADMIN],
    "view_cloud_status": [System(), ADMIN],
    "handle_extensions": [System(), ADMIN],
    "manage_notifications": [System(), ADMIN],
    "create_instance": [AnyUser()],
    # Whether a flavour has room now (the figures behind it are the administrators').
    "view_capacity": [System(), AnyUser()],
    "view_gpu_pools": [System(), ADMIN],
    "view_usage": [System(), ADMIN],
    # The support page: the instances one may help with.
    "support.list": [HasRole(Role.ADMIN, Role.IT_SUPPORT, Role.INSTRUMENT_SCIENTIST, Role.SCIENTIFIC_COMPUTING)],
    # Joining an instance by an invitation link: a person who logged in, never a token.
    "invitation.redeem": [Interactive()],
    # Any experiment may be attached and any enabled plan picked, not only one's own: admins
    # reproduce what any user gets.
    "experiments.use_any": [System(), ADMIN],
    "catalogue.all_plans": [System(), ADMIN],
    # A long-lived API token: from a browser session, or from a provider's token granted the
    # scope for it; never from another API token (a leaked one must not mint an unrevoked successor).
    "api_token.create": [Interactive(), IdpScope(MINT_TOKENS)],
    "api_token.revoke_any": [System(), ADMIN],  # one's own tokens: always
    # A request that changes something (not GET/HEAD/OPTIONS): a read-only token may not.
    "api.write": [System(), AnyUser() & WRITE],
    "search_open_data": [AnyUser()],
    # The user directory, to share with: not for guests of the facility, nor a read-only token
    # (a leaked reader must not enumerate who works here).
    "users.search": [System(), AnyUser() & LacksRole(Role.GUEST) & WRITE],  # embargo over: the data is public
    "create_instance_without_experiment": [System(), HasRole(Role.ADMIN, Role.STAFF, Role.GUEST)],
    # instance actions
    "instance.view": [System(), ADMIN, Member(), SupportFor()],
    "instance.control": [System(), ADMIN, Member("OWNER")],
    "instance.delete": [System(), ADMIN, Member("OWNER")],
    # Managing who is in: removing members, answering support, the list of links. An admin may.
    "instance.share": [Member("OWNER"), ADMIN],
    # Letting someone in (adding a member, a link, raising a GUEST to USER): the owner's consent
    # alone; an administrator joins as support, which a staff owner approves.
    "instance.invite": [Member("OWNER")],
    "instance.extend": [Member("OWNER"), ADMIN],
    # A public view-only link to the desktop, for someone without an account: the owner's consent alone.
    "instance.view_link": [Member("OWNER")],
    # Name, comments, keyboard layout and screen size, for the next connection: the owner's own.
    "instance.edit": [Member("OWNER")],
    # Whether members may use the desktop while the owner is away, for one instance against its
    # image's rule: the owner's choice (and an administrator's).
    "instance.member_access": [System(), ADMIN, Member("OWNER")],
    # Key/value attributes on an instance, to find and tell machines apart: administrators'.
    "instance.attributes": [System(), ADMIN],
    # Support staff (admins included) connect as SUPPORT members: they join at once when the
    # owner is not staff, else once the owner approves (visa.sharing.service). A desktop
    # takes input, so a read-only token may not open one. Where the image or the instance says
    # so, members other than the owner connect only while the owner is connected; staff never wait.
    "instance.connect": [Member("OWNER") & WRITE, OTHERS & WRITE & OwnerPresent(), OTHERS & WRITE & STAFF],
    # GUEST: view only. USER and SUPPORT act as the owner inside the machine: not where it runs on
    # the owner's home shared by all their machines (what they left there would run in the others).
    "instance.input": [Member("OWNER"), Member("USER", "SUPPORT") & MembersMayAct()],
    "instance.members.view": [System(), ADMIN, Member()],
    "instance.presence": [System(), ADMIN, Member()],  # who is connected now
    "instance.support.history": [System(), ADMIN, Member("OWNER")],  # who helped, when
    "instance.jupyter": [Member("OWNER")],
    # A web service the image declares (visa.gateway.webservice): the owner's, like JupyterLab.
    "instance.web_service": [Member("OWNER")],
    # Files in and out over SFTP as the owner's account: not for view-only GUESTs, nor SUPPORT.
    "instance.files.read": [Member("OWNER"), Member("USER") & MembersMayAct()],
    "instance.files.write": [Member("OWNER") & WRITE, Member("USER") & WRITE & MembersMayAct()],
    "instance.thumbnail.write": [Member("OWNER")],
    "instance.request_support": [SupportFor()],
    # GPU bookings (visa.bookings): anyone may ask for one for their own beamtime; administrators
    # decide on all, instrument scientists on those of their instruments.
    "booking.request": [AnyUser()],
    "booking.view": [System(), ADMIN, Requester(), ScientistOf()],
    "booking.decide": [System(), ADMIN, ScientistOf()],
    "booking.cancel": [System(), ADMIN, Requester()],
    # The list of bookings to decide on (an instrument scientist's holds their instruments' only).
    "booking.list_all": [System(), ADMIN, HasRole(Role.INSTRUMENT_SCIENTIST)],
}


def allowed(actor: PolicyActor, action: str, target: Any = None, *, now: datetime | None = None) -> bool:
    """Whether any rule for the action lets the actor through; ``now`` defaults to the actor's moment."""
    rules = POLICY.get(action)
    if rules is None:
        raise KeyError(f"no policy for action {action!r}")
    return any(rule.allows(actor, target, now) for rule in rules)


def require(actor: PolicyActor, action: str, target: Any = None, *, now: datetime | None = None) -> None:
    """Raise unless the actor may do this. On instances one cannot even see, answer 404."""
    if allowed(actor, action, target, now=now):
        return
    if (
        target is not None
        and action.startswith("instance.")
        and action != "instance.view"
        and not allowed(actor, "instance.view", target, now=now)
    ):
        raise NotFound("no such instance")
    raise Forbidden(f"not allowed: {action}")
