"""Errors shown to users name no host paths: how visa's machine is laid out stays in the log."""

from __future__ import annotations

from sqlalchemy import select

from tests.admin.world import build
from visa.db import Database
from visa.errors import CloudError, without_host_paths
from visa.instances.models import CommandAction, CommandState, Instance, InstanceCommand

FAULT = "Xvnc exited: [Errno 13] Permission denied: '/var/lib/visa/local-instances/0a1b/home/.vnc/passwd'"


def test_instance_faults_reach_users_without_host_paths(app, db: Database, clock) -> None:
    world = build(db, clock)
    with db.unit_of_work() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == world.uids["a1"]))
        inst.error_message = FAULT  # as the sync stores a session's fault
        s.add(InstanceCommand(instance_id=inst.id, action=CommandAction.START, state=CommandState.FAILED,
                              message="cannot start: /srv/visa/data/local-instances/0a1b is gone",
                              created_at=clock.now()))
    c = app.test_client()
    r = c.get(f"/api/instances/{world.uids['a1']}", headers={"Authorization": f"Bearer {world.user_token}"})
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and r.get_json()["error"].endswith("Permission denied: '…/passwd'")
    assert "/var/lib" not in body and "local-instances" not in body
    with db.sessionmaker() as s:
        assert all("/srv/" not in (c.message or "") for c in s.scalars(select(InstanceCommand)))


def test_cloud_errors_and_the_scrubber() -> None:
    err = CloudError("cannot create /var/lib/visa/local-instances/x: [Errno 28] No space left on device")
    assert err.to_dict()["message"] == "cannot create …/x: [Errno 28] No space left on device"
    assert without_host_paths("see https://docs.example.org/a/b, ratio 1/2, ~/notes") == (
        "see https://docs.example.org/a/b, ratio 1/2, ~/notes"
    )
