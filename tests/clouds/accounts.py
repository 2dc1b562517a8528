"""The host accounts visa's database would record for test owners, for tests that call the local
provider directly (the executor plans one with ``LocalProvider.new_account`` and records it
before the create)."""

from __future__ import annotations

import os
import pwd
import subprocess

from visa.clouds.local import LocalProvider
from visa.db import Database

# The accounts visa's database would record for the test owners (the executor plans one with
# LocalProvider.new_account and records it before the create): one per owner, for the session.
_RECORDED: dict[str, tuple[str, int]] = {}


def recorded_account(owner: str, uid: int | None = None) -> tuple[str, int] | None:
    """The owner's recorded host account where the provider makes accounts (root), else None. An
    account an earlier run of the tests made stands for that run's record."""
    if os.geteuid() != 0:
        return None
    if owner not in _RECORDED:
        prov = LocalProvider("local", {"root_dir": "/nonexistent"})
        name = prov.account_name(owner)
        try:
            _RECORDED[owner] = (name, pwd.getpwnam(name).pw_uid)
        except KeyError:
            planned = prov.new_account(owner, uid, {u for _, u in _RECORDED.values()})
            if planned is None:  # no accounts made here (no sandbox)
                return None
            _RECORDED[owner] = planned
    return _RECORDED[owner]


def remove_account(name: str) -> None:
    """Delete a unix account (and its group) a test made: the host is left as it was."""
    subprocess.run(["userdel", name], capture_output=True, check=False)
    subprocess.run(["groupdel", name], capture_output=True, check=False)


def remove_recorded_accounts(database: Database) -> None:
    """After a test: the host accounts its database recorded go (the next run's database records
    none, and would find them in its way)."""
    from sqlalchemy import select

    from visa.users.models import User

    with database.sessionmaker() as s:
        for name in s.scalars(select(User.unix_account).where(User.unix_account.is_not(None))):
            remove_account(name)
