"""A member who is added is told by email, with a link, on a real SMTP server on loopback; the
email leaves only once the change is committed (both databases)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.auth.world import login, seed
from tests.services import Inbox, inbox, smtp_server  # noqa: F401 (fixtures)
from visa.db import Database
from visa.mail.models import SentEmail
from visa.settings import Settings
from visa.users.models import User


@pytest.fixture
def settings(tmp_path, db: Database, smtp_server: tuple[Inbox, int]) -> Settings:  # noqa: F811
    return Settings(data_dir=tmp_path / "data", database_url=db.url, secret_key="test-secret-key",
                    base_url="http://visa.test",
                    smtp={"enabled": True, "host": "127.0.0.1", "port": smtp_server[1], "sender": "visa@visa.test"})


def test_the_added_member_gets_an_email_with_the_link(app, db, clock, api_client, inbox: Inbox) -> None:  # noqa: F811
    world = seed(db, clock)
    with db.unit_of_work() as s:
        s.scalar(select(User).where(User.username == "other")).email = "other@example.org"
    owner = login(api_client, db, "owner")
    r = owner.post(f"/api/instances/{world.uid}/members", json={"username": "other", "role": "GUEST"})
    assert r.status_code == 201
    [message] = inbox.wait_for(1)
    assert message["To"] == "other@example.org"
    assert "shared" in message["Subject"] and "Owner Person" in message["Subject"]
    body = message.get_body(("plain",)).get_content()
    assert f"http://visa.test/instances/{world.uid}" in body and "guest (view only)" in body
    html = message.get_body(("html",)).get_content()
    assert "because you were added" in html

    # a refused addition sends nothing: nothing was committed
    assert owner.post(f"/api/instances/{world.uid}/members", json={"username": "other", "role": "GUEST"}).status_code == 409
    with db.sessionmaker() as s:
        assert [e.key.split(":")[0] for e in s.scalars(select(SentEmail))] == ["member_added"]
    assert len(inbox.wait_for(2, timeout=1)) == 1
