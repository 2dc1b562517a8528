"""Presence and the owner-presence rule (both databases).

Attacker's view first: who is connected is shown to the instance's members only, display names
travel as data (escaped on the page, text in the events) and nothing of the gateway or the
machine comes with them. Then the rows' life (heartbeat, expiry of a dead gateway's rows, the
audited support session) and the rule that members other than the owner connect only while the
owner is connected, staff exempt.
"""

from __future__ import annotations

from sqlalchemy import select

from tests.auth.world import login, seed
from tests.factories import actor
from visa.audit.models import AuditEvent
from visa.gateway import service as gateway
from visa.instances.models import ConnectionProtocol, Instance, InstanceConnection, InstanceState, MemberRole
from visa.policy import allowed
from visa.sharing import presence
from visa.users.models import Role, RoleGrant, User

HOSTILE = '<img src=x onerror="alert(1)">&amp;'


def _load(s, uid: str) -> Instance:
    return s.scalar(select(Instance).where(Instance.uid == uid))


def _user(s, name: str) -> User:
    return s.scalar(select(User).where(User.username == name))


def _connect(db, clock, uid: str, name: str, protocol=ConnectionProtocol.DESKTOP, ttl: float = 45) -> int:
    with db.unit_of_work() as s:
        inst, user = _load(s, uid), _user(s, name)
        role = next(m.role for m in inst.members if m.user_id == user.id)
        return presence.open_connection(s, clock, inst.id, user.id, role, protocol, ttl)


def test_presence_is_for_members_only_and_names_are_data(app, db, clock, api_client) -> None:
    world = seed(db, clock)
    with db.unit_of_work() as s:
        _user(s, "member").full_name = HOSTILE
    _connect(db, clock, world.uid, "member")
    _connect(db, clock, world.uid, "owner", ConnectionProtocol.JUPYTER)

    body = login(api_client, db, "guest").get(f"/api/instances/{world.uid}/presence").get_json()
    assert set(body) == {"uid", "connected", "owner_connected", "waiting_for_owner"}
    people = {p["username"]: p for p in body["connected"]}
    assert set(people) == {"member", "owner"} and body["owner_connected"] is True
    for p in people.values():  # who, how, since: nothing of the gateway or the machine
        assert set(p) == {"username", "full_name", "role", "protocols", "since"}
    assert people["member"]["full_name"] == HOSTILE and people["owner"]["protocols"] == ["JUPYTER"]

    # Another user learns nothing, not even that the instance exists; nor does anonymous.
    assert login(api_client, db, "other").get(f"/api/instances/{world.uid}/presence").status_code == 404
    assert api_client().get(f"/api/instances/{world.uid}/presence").status_code == 401
    with db.sessionmaker() as s:
        other = _user(s, "other")
        assert world.uid not in presence.presence_feed(s, other.id, clock.now())
        guest = _user(s, "guest")
        fed = presence.presence_feed(s, guest.id, clock.now())[world.uid]
        assert {p.full_name for p in fed.connected} == {HOSTILE, "Owner Person"}

    page = login(api_client, db, "owner").get(f"/instances/{world.uid}").get_data(as_text=True)
    assert HOSTILE not in page and "&lt;img src=x onerror=" in page


def test_rows_beat_expire_and_close_and_support_sessions_are_audited(app, db, clock, api_client) -> None:
    world = seed(db, clock)
    gone = _connect(db, clock, world.uid, "member", ttl=30)  # a gateway that dies: no close, no beat
    helping = _connect(db, clock, world.uid, "support", ttl=30)
    clock.advance(seconds=20)
    with db.unit_of_work() as s:
        presence.heartbeat(s, clock, helping, 30)
    clock.advance(seconds=15)
    owner = login(api_client, db, "owner")
    names = [p["username"] for p in owner.get(f"/api/instances/{world.uid}/presence").get_json()["connected"]]
    assert names == ["support"]  # the dead gateway's row expired by itself
    with db.unit_of_work() as s:
        assert presence.purge_expired(s, clock) == 1
        assert s.get(InstanceConnection, gone) is None
    clock.advance(minutes=5)
    with db.unit_of_work() as s:
        presence.close_connection(s, clock, helping)
        assert s.scalars(select(InstanceConnection)).all() == []
        actions = [e.action for e in s.scalars(select(AuditEvent).where(AuditEvent.target_id == world.uid))]
        assert actions.count(presence.SUPPORT_OPEN) == 1 and actions.count(presence.SUPPORT_CLOSE) == 1

    helped = owner.get(f"/api/instances/{world.uid}/support/sessions").get_json()
    assert [(h["username"], h["protocol"]) for h in helped] == [("support", "DESKTOP")]
    assert helped[0]["ended_at"] is not None
    assert "Who helped" in owner.get(f"/instances/{world.uid}").get_data(as_text=True)
    # only the owner (and admins) see who helped
    assert login(api_client, db, "member").get(f"/api/instances/{world.uid}/support/sessions").status_code == 403


def test_members_connect_only_while_the_owner_is_connected(app, db, clock, api_client) -> None:
    world = seed(db, clock)
    with db.unit_of_work() as s:
        inst = _load(s, world.uid)
        inst.plan.image.members_need_owner = True
        inst.state, inst.address = InstanceState.ACTIVE, "127.0.0.1"
        inst.provider_state = {"ports": {"VNC": 5901}}
        owner = _user(s, "owner")
        s.query(RoleGrant).filter_by(user_id=owner.id, role=Role.STAFF).delete()  # the owner's rule, not staff's
    member = login(api_client, db, "member")
    r = member.post(f"/api/instances/{world.uid}/connect")
    assert r.status_code == 409 and r.get_json()["error"] == "waiting_for_owner", r.get_json()
    assert "Waiting for the owner" in member.get(f"/instances/{world.uid}/_status").get_data(as_text=True)
    assert member.get(f"/api/instances/{world.uid}/presence").get_json()["waiting_for_owner"] is True
    # The desktop page opens for the waiting member (it waits, then connects): it carries no way
    # in, the connect call above stays refused. Someone who is no member gets no page at all.
    page = member.get(f"/instances/{world.uid}/desktop")
    assert page.status_code == 200 and 'data-uid="' + world.uid + '"' in page.get_data(as_text=True)
    assert login(api_client, db, "other").get(f"/instances/{world.uid}/desktop").status_code in (403, 404)
    # the owner is never kept out of their own machine
    assert login(api_client, db, "owner").post(f"/api/instances/{world.uid}/connect").status_code == 200

    owner_conn = _connect(db, clock, world.uid, "owner")
    assert member.post(f"/api/instances/{world.uid}/connect").status_code == 200
    with db.sessionmaker() as s:
        inst, m = _load(s, world.uid), _user(s, "member")
        assert gateway.check_access(s, clock, m.id, inst.id, "instance.connect") is True

    with db.unit_of_work() as s:  # the owner leaves: the member's open desktop is told why it closes
        presence.close_connection(s, clock, owner_conn)
    with db.sessionmaker() as s:
        inst, m = _load(s, world.uid), _user(s, "member")
        assert gateway.check_access(s, clock, m.id, inst.id, "instance.connect") is None
        assert gateway.waiting_for_owner(s, clock, m.id, inst.id) is True
    assert member.post(f"/api/instances/{world.uid}/connect").status_code == 409
    guest = login(api_client, db, "guest")  # a guest waits like any member other than the owner
    assert guest.get(f"/instances/{world.uid}/desktop").status_code == 200
    assert guest.post(f"/api/instances/{world.uid}/connect").status_code == 409

    with db.unit_of_work() as s:  # staff members never wait
        s.add(RoleGrant(user_id=_user(s, "member").id, role=Role.STAFF, granted_at=clock.now()))
    assert member.post(f"/api/instances/{world.uid}/connect").status_code == 200
    with db.unit_of_work() as s:  # an instance's own setting overrides its image's
        s.query(RoleGrant).filter_by(user_id=_user(s, "member").id, role=Role.STAFF).delete()
        _load(s, world.uid).unrestricted_member_access = True
    assert member.post(f"/api/instances/{world.uid}/connect").status_code == 200
    with db.sessionmaker() as s:
        inst, guest = _load(s, world.uid), _user(s, "guest")
        assert allowed(actor(guest, clock), "instance.connect", inst)
        assert next(m.role for m in inst.members if m.user_id == guest.id) == MemberRole.GUEST


def test_administrators_set_the_rule_for_one_instance(app, db, clock, api_client) -> None:
    world = seed(db, clock)
    with db.unit_of_work() as s:  # the image lets members in alone; this instance will not
        inst = _load(s, world.uid)
        inst.plan.image.members_need_owner = False
        inst.state, inst.address = InstanceState.ACTIVE, "127.0.0.1"
        inst.provider_state = {"ports": {"VNC": 5901}}
        s.query(RoleGrant).filter_by(user_id=_user(s, "owner").id, role=Role.STAFF).delete()
    member, admin = login(api_client, db, "member"), login(api_client, db, "admin")
    url = f"/api/admin/instances/{world.uid}/member-access"
    assert member.post(f"/api/instances/{world.uid}/connect").status_code == 200
    # Not the members' or the owner's to change, and a bad mode is named with nothing written.
    assert member.put(url, json={"mode": "unrestricted"}).status_code == 403
    assert login(api_client, db, "owner").put(url, json={"mode": "unrestricted"}).status_code == 403
    r = admin.put(url, json={"mode": "sometimes"})
    assert r.status_code == 400 and "mode" in str(r.get_json()), r.get_json()
    assert admin.put("/api/admin/instances/nosuchthing0/member-access", json={"mode": "image"}).status_code == 404
    assert admin.get(f"/api/admin/instances/{world.uid}").get_json()["member_access"] == "image"

    r = admin.put(url, json={"mode": "owner_required"})
    assert r.status_code == 200 and r.get_json() == {"uid": world.uid, "member_access": "owner_required",
                                                     "members_need_owner": True}
    r = member.post(f"/api/instances/{world.uid}/connect")
    assert r.status_code == 409 and r.get_json()["error"] == "waiting_for_owner"
    assert admin.put(url, json={"mode": "image"}).get_json()["members_need_owner"] is False
    assert member.post(f"/api/instances/{world.uid}/connect").status_code == 200
    with db.sessionmaker() as s:
        changes = s.scalars(select(AuditEvent).where(AuditEvent.action == "instance.member_access")
                            .order_by(AuditEvent.id)).all()
        assert [(e.details["old"], e.details["new"]) for e in changes] == [("image", "owner_required"),
                                                                          ("owner_required", "image")]
        assert {e.actor_name for e in changes} == {"admin"}


def test_the_owner_chooses_whether_members_use_the_desktop_while_away(app, db, clock, api_client) -> None:
    world = seed(db, clock)
    with db.unit_of_work() as s:  # the image lets members in alone
        inst = _load(s, world.uid)
        inst.plan.image.members_need_owner = False
        inst.state, inst.address = InstanceState.ACTIVE, "127.0.0.1"
        inst.provider_state = {"ports": {"VNC": 5901}}
        s.query(RoleGrant).filter_by(user_id=_user(s, "owner").id, role=Role.STAFF).delete()
    owner, member = login(api_client, db, "owner"), login(api_client, db, "member")
    url = f"/api/instances/{world.uid}/member-access"
    # Members may not choose it for themselves; another user is not told the instance exists.
    assert member.put(url, json={"mode": "unrestricted"}).status_code == 403
    assert login(api_client, db, "guest").put(url, json={"mode": "unrestricted"}).status_code == 403
    assert login(api_client, db, "other").put(url, json={"mode": "owner_required"}).status_code == 404
    r = owner.put(url, json={"mode": "while away"})
    assert r.status_code == 400 and r.get_json()["field"] == "mode", r.get_json()
    assert member.post(f"/api/instances/{world.uid}/connect").status_code == 200

    r = owner.put(url, json={"mode": "owner_required"})
    assert r.status_code == 200 and r.get_json()["members_need_owner"] is True
    r = member.post(f"/api/instances/{world.uid}/connect")
    assert r.status_code == 409 and r.get_json()["error"] == "waiting_for_owner"
    assert owner.put(url, json={"mode": "owner_required"}).status_code == 200  # unchanged: not audited again
    assert owner.put(url, json={"mode": "unrestricted"}).get_json()["members_need_owner"] is False
    assert member.post(f"/api/instances/{world.uid}/connect").status_code == 200
    with db.sessionmaker() as s:
        changes = s.scalars(select(AuditEvent).where(AuditEvent.action == "instance.member_access")
                            .order_by(AuditEvent.id)).all()
        assert [(e.actor_name, e.details["old"], e.details["new"]) for e in changes] == [
            ("owner", "image", "owner_required"), ("owner", "owner_required", "unrestricted")]
