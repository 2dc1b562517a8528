"""The running services on the test database, with a real SMTP server on loopback, and instances
in it: the fixtures of the instances', mail and scheduler tests (their conftest.py imports them)."""

from __future__ import annotations

import email
import email.policy
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage as Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.orm import Session

from tests.factories import make_cloud, make_flavour, make_image, make_plan, make_user
from tests.processes import free_port
from visa.clock import FrozenClock
from visa.db import Database
from visa.instances.models import Instance, InstanceMember, InstanceState, MemberRole
from visa.services import Services
from visa.settings import Settings
from visa.users.models import Role, User


class Inbox:
    """What the SMTP server received."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd API
        with self._lock:
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"

    def keys(self) -> list[str]:
        with self._lock:
            return [m["X-Visa-Event"] for m in self.messages]

    def of_kind(self, kind: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m["X-Visa-Event"].startswith(kind + ":")]

    def wait_for_kind(self, kind: str, timeout: float = 10) -> list[Message]:
        """The messages of one kind, once at least one has come (or none, after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not (found := self.of_kind(kind)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    def wait_for(self, count: int, timeout: float = 10) -> list[Message]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.messages)


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def inbox(smtp_server: tuple[Inbox, int]) -> Inbox:
    return smtp_server[0]


@pytest.fixture
def sched_settings(tmp_path, db: Database, smtp_server: tuple[Inbox, int]) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", database_url=db.url, secret_key="k", base_url="http://visa.test",
        smtp={"enabled": True, "host": "127.0.0.1", "port": smtp_server[1], "sender": "visa@visa.test"},
    )


@pytest.fixture
def services(sched_settings: Settings, db: Database, clock: FrozenClock) -> Services:
    return Services(settings=sched_settings, database=db, clock=clock)


@pytest.fixture
def world(db: Database, clock: FrozenClock) -> dict[str, int]:
    """A cloud, a plan, a user and a staff member (ids)."""
    with db.unit_of_work() as s:
        cloud = make_cloud(s, clock, "local", kind="local")
        plan = make_plan(s, make_image(s, "desktop"), make_flavour(s, "small"))
        alice = make_user(s, clock, "alice", email="alice@example.org", full_name="Alice A")
        sam = make_user(s, clock, "sam", roles=(Role.STAFF,), email="sam@example.org")
        admin = make_user(s, clock, "root", roles=(Role.ADMIN,), email="root@example.org", password="rootpassword")
        return {"cloud": cloud.id, "plan": plan.id, "alice": alice.id, "sam": sam.id, "admin": admin.id}


def add_instance(s: Session, clock: FrozenClock, world: dict[str, int], owner: str = "alice", *,
                 lifetime: timedelta = timedelta(days=14), **fields: Any) -> Instance:
    now = clock.now()
    user = s.get(User, world[owner])
    assert user is not None
    values: dict[str, Any] = {
        "uid": secrets.token_hex(6), "name": f"{owner}'s machine", "owner_id": user.id,
        "plan_id": world["plan"], "cloud_id": world["cloud"], "state": InstanceState.ACTIVE, "secret": "s" * 20,
        "provider_state": {}, "created_at": now, "state_changed_at": now, "terminates_at": now + lifetime,
        "last_seen_at": now,
    }
    values.update(fields)
    inst = Instance(**values)
    inst.members.append(InstanceMember(user_id=user.id, role=MemberRole.OWNER, created_at=now))
    s.add(inst)
    s.flush()
    return inst
