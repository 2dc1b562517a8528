"""Who may do what: the one gate. Ground floor: imports nothing of visa's features.

``require(actor, action, target)`` and ``allowed(...)`` read ``POLICY`` (``table.py``), a
table of small rules (``rules.py``) that reach their targets through protocols.
"""

from visa.policy.roles import STAFF_ROLES, ActorKind, Role
from visa.policy.rules import member_role, support_allowed
from visa.policy.table import MINT_TOKENS, POLICY, allowed, require

__all__ = [
    "MINT_TOKENS",
    "POLICY",
    "STAFF_ROLES",
    "ActorKind",
    "Role",
    "allowed",
    "member_role",
    "require",
    "support_allowed",
]
