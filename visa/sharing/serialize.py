"""Members as the API shows them."""

from __future__ import annotations

from visa.instances.models import InstanceMember
from visa.sharing.schemas import MemberOut


def member_out(m: InstanceMember) -> MemberOut:
    return MemberOut(username=m.user.username, full_name=m.user.full_name, role=m.role.value, since=m.created_at)
