"""An operator records a host account as a user's (``visa users unix-account``): never one another
visa user has, nor over the user's own without being told to."""

from __future__ import annotations

import pytest

from tests.factories import actor, make_user
from visa.actor import SYSTEM
from visa.clock import FrozenClock
from visa.errors import Conflict, Forbidden
from visa.policy import Role
from visa.users.service import adopt_unix_account, record_unix_account


def test_an_operator_records_an_account_and_nobody_takes_anothers(db) -> None:
    clock = FrozenClock()
    with db.unit_of_work() as s:
        ann = make_user(s, clock, "ann", uid_number=None, gid_number=None)
        bea = make_user(s, clock, "bea", uid_number=None, gid_number=None)
        cid = make_user(s, clock, "cid", uid_number=5005, gid_number=5005)
        admin = make_user(s, clock, "ada", roles=(Role.ADMIN,))
        record_unix_account(s, clock, ann, "visa-ann", 280001)

        adopt_unix_account(SYSTEM, s, clock, bea, "legacy-bea", 280002)
        assert (bea.unix_account, bea.unix_account_uid) == ("legacy-bea", 280002)
        with pytest.raises(Conflict, match="recorded as ann's"):
            adopt_unix_account(SYSTEM, s, clock, bea, "visa-ann", 280003, replace=True)
        with pytest.raises(Conflict, match="another visa user's"):
            adopt_unix_account(SYSTEM, s, clock, bea, "other", 280001, replace=True)
        with pytest.raises(Conflict, match="another visa user's"):
            adopt_unix_account(SYSTEM, s, clock, bea, "other", 5005, replace=True)
        with pytest.raises(Conflict, match="already runs as the unix account legacy-bea"):
            adopt_unix_account(SYSTEM, s, clock, bea, "other", 280004)
        with pytest.raises(Conflict, match="cid's uid is 5005"):
            adopt_unix_account(SYSTEM, s, clock, cid, "cid-account", 280005)
        adopt_unix_account(SYSTEM, s, clock, cid, "cid-account", 5005)
        # Which host account runs a user's sessions is the host's operators' say, not an administrator's.
        with pytest.raises(Forbidden):
            adopt_unix_account(actor(admin, clock), s, clock, ann, "elsewhere", 280006, replace=True)
        assert (bea.unix_account, cid.unix_account, ann.unix_account) == ("legacy-bea", "cid-account", "visa-ann")
