"""Imports the user office's experiments: validates the whole file, then upserts idempotently."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.audit.service import record
from visa.clock import Clock
from visa.errors import InvalidInput
from visa.experiments.models import Experiment, Instrument, Proposal
from visa.experiments.schemas import ExperimentSpec
from visa.policy import require
from visa.settings import PosixSettings
from visa.users.models import User
from visa.users.service import SOURCES, Posix, reserved_usernames, set_posix, validate_posix

MAX_FILE_BYTES = 50_000_000
CSV_COLUMNS = ["id", "proposal", "proposal_title", "public_at", "instrument", "start_date", "end_date", "title", "members"]


class ImportFileError(InvalidInput):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid experiments file:\n  " + "\n  ".join(problems[:50]), problems=problems)
        self.problems = problems


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    users_created: int = 0
    identities_set: int = 0

    def __str__(self) -> str:
        return (
            f"{self.created} experiments created, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.users_created} users created, {self.identities_set} unix identities set"
        )


def _raw_records(path: Path) -> list[Any]:
    if not path.is_file():
        raise ImportFileError([f"{path}: no such file"])
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ImportFileError([f"{path}: larger than {MAX_FILE_BYTES} bytes"])
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in ("id", "proposal", "instrument", "start_date", "end_date") if c not in (reader.fieldnames or [])]
        if missing:
            raise ImportFileError([f"{path}: missing CSV column(s): {', '.join(missing)}"])
        unknown = [c for c in reader.fieldnames or [] if c not in CSV_COLUMNS]
        if unknown:
            raise ImportFileError([f"{path}: unknown CSV column(s): {', '.join(unknown)}"])
        return [dict(row) for row in reader]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFileError([f"{path}: not valid JSON: {exc}"]) from None
    if isinstance(data, dict) and isinstance(data.get("experiments"), list):
        data = data["experiments"]
    if not isinstance(data, list):
        raise ImportFileError([f"{path}: expected a list of experiments (or {{\"experiments\": [...]}})"])
    return data


def parse_file(path: Path) -> list[ExperimentSpec]:
    problems: list[str] = []
    specs: list[ExperimentSpec] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(_raw_records(path)):
        label = f"entry {raw['id'][:64]!r}" if isinstance(raw, dict) and isinstance(raw.get("id"), str) else f"entry #{index + 1}"
        if not isinstance(raw, dict):
            problems.append(f"{path}: {label}: expected an object")
            continue
        try:
            spec = ExperimentSpec.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"]) or "(entry)"
                problems.append(f"{path}: {label}: field '{field}': {err['msg']}")
            continue
        if spec.id in seen:
            problems.append(f"{path}: {label}: field 'id': duplicate experiment id (also entry #{seen[spec.id] + 1})")
            continue
        seen[spec.id] = index
        specs.append(spec)
    if problems:
        raise ImportFileError(problems)
    return specs


def _identities(
    session: Session, specs: list[ExperimentSpec], limits: PosixSettings, origin: str
) -> dict[str, Posix]:
    """Each member's unix identity in the file, checked as a whole before anything is written:
    values in range, one identity per member, one member per uid, no uid another account has."""
    problems: list[str] = []
    found: dict[str, tuple[Posix, str]] = {}
    owners: dict[int, str] = {}
    prefix = f"{origin}: " if origin else ""
    for spec in specs:
        for m in spec.members:
            raw = Posix(m.uid_number, m.gid_number, tuple(m.extra_gids), m.home_path)
            if raw.is_empty():
                continue
            where = f"{prefix}entry {spec.id!r}: member {m.username}"
            try:
                posix = validate_posix(raw, limits=limits)
            except InvalidInput as exc:
                problems.append(f"{where}: field '{exc.field}': {exc.message}")
                continue
            if m.username in found and found[m.username][0] != posix:
                problems.append(f"{where}: a different unix identity than in {found[m.username][1]}")
                continue
            found[m.username] = (posix, f"entry {spec.id!r}")
            uid = posix.uid_number
            if uid is not None and owners.setdefault(uid, m.username) != m.username:
                problems.append(f"{where}: field 'uid_number': uid {uid} is also {owners[uid]}'s in this file")
    uids = {p.uid_number: name for name, (p, _) in found.items() if p.uid_number is not None}
    if uids:
        for user in session.scalars(select(User).where(User.uid_number.in_(list(uids)))):
            name = uids[user.uid_number]  # type: ignore[index]
            if user.username != name:
                problems.append(f"{prefix}member {name}: field 'uid_number': uid {user.uid_number} is already "
                                f"{user.username}'s")
    if problems:
        raise ImportFileError(problems)
    return {name: posix for name, (posix, _) in found.items()}


def import_experiments(
    actor: Actor, session: Session, clock: Clock, specs: list[ExperimentSpec], *, default_quota: int = 2,
    limits: PosixSettings | None = None, origin: str = "", reserved: Collection[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Upsert the file's experiments and members. Members' unix identities are taken unless the
    identity provider gave them (an earlier source, ``visa.users.service.SOURCES``). A new member
    may not have a reserved name (``reserved``, default ``reserved_usernames()``)."""
    require(actor, "import_experiments")
    result = ImportResult()
    now = clock.now()
    limits = limits or PosixSettings()
    instruments = {i.name: i for i in session.scalars(select(Instrument))}
    proposals = {p.identifier: p for p in session.scalars(select(Proposal))}
    experiments = {e.external_id: e for e in session.scalars(select(Experiment))}
    usernames = {m.username for s in specs for m in s.members}
    users = {u.username: u for u in session.scalars(select(User).where(User.username.in_(usernames)))} if usernames else {}
    refused = sorted((usernames - users.keys()) & (reserved_usernames() if reserved is None else set(reserved)))
    if refused:
        raise ImportFileError([f"{origin + ': ' if origin else ''}member {name}: field 'username': the username "
                               f"{name!r} is reserved (root, visa's own unix account or the activity probe's)"
                               for name in refused])
    identities = _identities(session, specs, limits, origin)

    for done, spec in enumerate(specs):
        if progress:
            progress(done, len(specs))
        inst = instruments.get(spec.instrument)
        if inst is None:
            inst = instruments[spec.instrument] = Instrument(name=spec.instrument)
            session.add(inst)
        prop = proposals.get(spec.proposal)
        if prop is None:
            prop = proposals[spec.proposal] = Proposal(identifier=spec.proposal, title=spec.proposal_title)
            session.add(prop)
        if spec.proposal_title:
            prop.title = spec.proposal_title
        prop.public_at = spec.public_at or prop.public_at

        members = []
        for m in spec.members:
            user = users.get(m.username)
            if user is None:
                user = users[m.username] = User(
                    username=m.username, full_name=m.full_name, email=m.email,
                    instance_quota=default_quota, active=True, created_at=now,
                )
                session.add(user)
                result.users_created += 1
            else:
                user.full_name = m.full_name or user.full_name
                user.email = m.email or user.email
            members.append(user)
            posix = identities.pop(m.username, None)
            if posix is not None and "import" in limits.sources and (
                    user.posix_source is None or SOURCES[user.posix_source] >= SOURCES["import"]):
                session.flush()  # a new member needs its id before its identity is audited
                if set_posix(actor, session, clock, user, posix, source="import", limits=limits):
                    result.identities_set += 1

        exp = experiments.get(spec.id)
        values = {
            "proposal": prop, "instrument": inst, "start_date": spec.start_date,
            "end_date": spec.end_date, "title": spec.title,
        }
        if exp is None:
            exp = experiments[spec.id] = Experiment(external_id=spec.id, members=members, **values)
            session.add(exp)
            result.created += 1
            continue
        changed = any(getattr(exp, k) is not v and getattr(exp, k) != v for k, v in values.items())
        changed |= {u.username for u in exp.members} != {u.username for u in members}
        for k, v in values.items():
            setattr(exp, k, v)
        exp.members = members
        if changed:
            result.updated += 1
        else:
            result.unchanged += 1
    session.flush()
    record(actor, session, clock, "experiments.import", target_type="experiments",
           created=result.created, updated=result.updated, users_created=result.users_created,
           identities_set=result.identities_set)
    return result
