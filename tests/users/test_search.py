"""Finding users to share with: a directory that a GUEST or a read-only token does not read,
and never more than a page of it."""

from __future__ import annotations

from tests.auth.world import login, seed
from tests.factories import make_user
from visa.users.models import Role
from visa.users.search import MAX_RESULTS


def test_guests_and_read_only_tokens_cannot_list_users(db, clock, app, api_client) -> None:
    seed(db, clock)
    with db.unit_of_work() as s:
        make_user(s, clock, "visitor", roles=(Role.GUEST,), full_name="Visiting Person")
    visitor = login(api_client, db, "visitor")
    r = visitor.get("/api/users/search?q=person")
    assert r.status_code == 403 and r.get_json()["error"]

    owner = login(api_client, db, "owner")
    read = owner.post("/api/tokens", json={"name": "read", "scopes": "api:read"}).get_json()["token"]
    write = owner.post("/api/tokens", json={"name": "write"}).get_json()["token"]
    c = app.test_client()
    assert c.get("/api/users/search?q=person", headers={"Authorization": f"Bearer {read}"}).status_code == 403
    assert c.get("/api/users/search?q=person", headers={"Authorization": f"Bearer {write}"}).status_code == 200
    assert owner.get("/api/users/search?q=person").status_code == 200


def test_a_search_answers_one_page_at_most(db, clock, api_client) -> None:
    seed(db, clock)
    with db.unit_of_work() as s:
        for i in range(MAX_RESULTS + 15):
            make_user(s, clock, f"pe{i:03}", full_name=f"Many {i}")
    owner = login(api_client, db, "owner")
    found = owner.get("/api/users/search?q=pe&limit=1000").get_json()
    assert len(found) == MAX_RESULTS <= 20
