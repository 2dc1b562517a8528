"""Compare what a cloud holds with what visa knows: orphans, missing servers, adoptable ones.

Pure functions over :meth:`Provider.list_servers` output, so one list call per cloud feeds
the state sync and the zombie cleanup alike, and both are testable without a cloud.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from visa.clouds.base import Server
from visa.states import InstanceState

# States in which a server is already on its way out: never an orphan to delete again.
_GONE = frozenset({InstanceState.DELETED, InstanceState.DELETING})


@dataclass(frozen=True)
class Reconciliation:
    # Known server id -> what the cloud says of it now.
    present: dict[str, Server] = field(default_factory=dict)
    # Known server ids the cloud no longer has (deleted behind visa's back, or never made).
    missing: list[str] = field(default_factory=list)
    # Tagged servers visa knows nothing of: candidates for the zombie cleanup.
    orphans: list[Server] = field(default_factory=list)
    # Servers whose id visa never recorded but whose instance uid it knows (a create whose
    # answer was lost): instance uid -> server, to adopt rather than delete.
    adoptable: dict[str, Server] = field(default_factory=dict)
    # Unknown servers too young to call orphans: their create may not be committed yet.
    recent: list[Server] = field(default_factory=list)


def reconcile(
    servers: Iterable[Server],
    known_ids: Iterable[str],
    *,
    known_uids: Iterable[str] = (),
    created_before: datetime | None = None,
) -> Reconciliation:
    """Sort ``servers`` (one cloud's ``list_servers()``) against the ids visa holds for it.

    ``known_uids`` are the uids of instances on this cloud still waiting for a server id;
    with ``created_before``, unknown servers created at or after it are ``recent``, not orphans.
    """
    known = set(known_ids)
    waiting = set(known_uids)
    result = Reconciliation()
    for server in servers:
        if server.id in known:
            result.present[server.id] = server
        elif server.instance_uid is not None and server.instance_uid in waiting:
            result.adoptable[server.instance_uid] = server
        elif server.state in _GONE:
            continue
        elif created_before is not None and (
            server.created_at is None or server.created_at >= created_before
        ):
            result.recent.append(server)
        else:
            result.orphans.append(server)
    result.missing.extend(sorted(known - result.present.keys()))
    return result
