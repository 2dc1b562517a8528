"""Clean-up: orphan servers reported then deleted after the grace period; expired grants and tokens."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from tests.clouds.doubles import InMemoryCloud
from tests.services import add_instance
from visa.clock import FrozenClock
from visa.clouds.base import Server
from visa.instances.models import ConnectToken, InstanceState, MemberRole
from visa.scheduler.cleanup import Cleanup
from visa.services import Services
from visa.users.models import Role, RoleGrant


def test_orphans_grants_and_tokens(services: Services, world, clock: FrozenClock) -> None:
    now = clock.now()
    with services.database.unit_of_work() as s:
        known = add_instance(s, clock, world, cloud_server_id="srv-known")
        waiting = add_instance(s, clock, world, state=InstanceState.BUILDING)  # create answered, id not stored yet
        gone = add_instance(s, clock, world, cloud_server_id="srv-of-deleted", deleted_at=now,
                            state=InstanceState.DELETED)
        s.add(RoleGrant(user_id=world["alice"], role=Role.GUEST, granted_at=now - timedelta(days=9),
                        expires_at=now - timedelta(days=1)))
        s.add(RoleGrant(user_id=world["alice"], role=Role.STAFF, granted_at=now, expires_at=now + timedelta(days=1)))
        for age in (10, 40, 3600):
            s.add(ConnectToken(token_hash=f"h{age}", instance_id=known.id, user_id=world["alice"],
                               role=MemberRole.OWNER, created_at=now - timedelta(seconds=age),
                               expires_at=now - timedelta(seconds=age) + timedelta(seconds=30)))
        s.add(ConnectToken(token_hash="spent", instance_id=known.id, user_id=world["alice"],  # used once: done
                           role=MemberRole.OWNER, created_at=now, used_at=now, expires_at=now + timedelta(seconds=20)))
        waiting_uid, gone_uid = waiting.uid, gone.uid
    cloud = InMemoryCloud([
        Server("srv-known", "visa-1", InstanceState.ACTIVE),
        Server("srv-waiting", "visa-2", InstanceState.BUILDING, instance_uid=waiting_uid),
        Server("srv-of-deleted", "visa-3", InstanceState.STOPPED, instance_uid=gone_uid,
               created_at=now - timedelta(days=3)),
        Server("srv-stray", "visa-4", InstanceState.ACTIVE, instance_uid="nobody"),  # no creation time
    ])
    services.set_provider("local", cloud)
    cleanup = Cleanup(services)

    r = cleanup.run()
    assert r.grants == 1 and r.tokens == 3
    assert sorted(r.orphans["local"]) == ["srv-of-deleted", "srv-stray"]
    assert r.removed == {"local": ["srv-of-deleted"]}  # older than the grace period
    with services.database.sessionmaker() as s:
        assert s.scalar(select(func.count(RoleGrant.id))) == 3  # the running grants (and the world's) stay
        assert s.scalar(select(func.count(ConnectToken.id))) == 1

    clock.advance(hours=23)
    assert cleanup.run().removed == {}  # reported, not yet deleted
    clock.advance(hours=1)
    assert cleanup.run().removed == {"local": ["srv-stray"]}
    assert sorted(cloud.servers) == ["srv-known", "srv-waiting"]


def test_view_links_ended_over_a_week_ago_are_purged(services: Services, world, clock: FrozenClock) -> None:
    from visa.sharing.models import ViewLink

    now = clock.now()
    with services.database.unit_of_work() as s:
        inst = add_instance(s, clock, world)
        ends = {"live": (now + timedelta(hours=1), None), "expired-6d": (now - timedelta(days=6), None),
                "expired-8d": (now - timedelta(days=8), None),
                "revoked-8d": (now + timedelta(days=30), now - timedelta(days=8)),
                "revoked-1d": (now + timedelta(days=30), now - timedelta(days=1))}
        for label, (expires, revoked) in ends.items():
            s.add(ViewLink(instance_id=inst.id, token_hash=label, label=label, created_by_id=world["alice"],
                           created_at=now - timedelta(days=40), expires_at=expires, revoked_at=revoked))
    services.set_provider("local", InMemoryCloud([]))
    assert Cleanup(services).run().view_links == 2
    with services.database.sessionmaker() as s:
        assert sorted(s.scalars(select(ViewLink.label))) == ["expired-6d", "live", "revoked-1d"]
