"""Imports the user office's experiments: validates the whole file, then upserts idempotently."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.audit.service import record
from visa.clock import Clock
from visa.db import Database, end_unit_of_work
from visa.errors import InvalidInput
from visa.experiments.models import Experiment, Instrument, Proposal
from visa.experiments.schemas import ExperimentSpec, InstrumentSpec, MemberSpec, ScientistSpec
from visa.policy import Role, require
from visa.settings import PosixSettings, Settings
from visa.users.models import User
from visa.users.service import SOURCES, Posix, grant_role, reserved_usernames, set_posix, validate_posix

MAX_FILE_BYTES = 50_000_000
M = TypeVar("M", bound=BaseModel)
CSV_COLUMNS = ["id", "proposal", "proposal_title", "public_at", "instrument", "start_date", "end_date", "title",
               "members", "instrument_scientists", "doi", "data_url", "logbook_url"]
FORMATS = ("json", "csv")


class ImportFileError(InvalidInput):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid experiments file:\n  " + "\n  ".join(problems[:50]), problems=problems)
        self.problems = problems


@dataclass
class ImportData:
    """A whole export, validated: its experiments, and the instruments whose scientists it states
    (None: it says nothing of scientists, and the import leaves them as they are)."""

    experiments: list[ExperimentSpec]
    instruments: list[InstrumentSpec] | None = None
    origin: str = ""
    lines: dict[str, int] = field(default_factory=dict)  # experiment id: its line in the file

    def where(self, experiment_id: str) -> str:
        line = self.lines.get(experiment_id)
        return f"{self.origin + ': ' if self.origin else ''}{f'line {line}: ' if line else ''}entry {experiment_id!r}"


@dataclass
class ImportResult:
    """What an import changed (or, in a dry run, would change)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    users_created: int = 0
    identities_set: int = 0
    experiments_added: list[str] = field(default_factory=list)
    experiments_updated: list[tuple[str, list[str]]] = field(default_factory=list)  # id, the fields changed
    members_added: list[tuple[str, str]] = field(default_factory=list)  # experiment id, username
    members_removed: list[tuple[str, str]] = field(default_factory=list)
    scientists_added: list[tuple[str, str]] = field(default_factory=list)  # instrument, username
    scientists_removed: list[tuple[str, str]] = field(default_factory=list)
    users_added: list[str] = field(default_factory=list)
    roles_granted: list[str] = field(default_factory=list)  # usernames made INSTRUMENT_SCIENTIST

    def __str__(self) -> str:
        return (
            f"{self.created} experiments created, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.users_created} users created, {self.identities_set} unix identities set, "
            f"{len(self.scientists_added)} instrument scientists added, {len(self.scientists_removed)} removed"
        )

    def changes(self) -> list[str]:
        """One line per change, in the file's order of kinds."""
        return (
            [f"experiment {e}: added" for e in self.experiments_added]
            + [f"experiment {e}: updated ({', '.join(f)})" for e, f in self.experiments_updated]
            + [f"experiment {e}: member {u} added" for e, u in self.members_added]
            + [f"experiment {e}: member {u} removed" for e, u in self.members_removed]
            + [f"instrument {i}: scientist {u} added" for i, u in self.scientists_added]
            + [f"instrument {i}: scientist {u} removed" for i, u in self.scientists_removed]
            + [f"user {u}: created" for u in self.users_added]
            + [f"user {u}: role INSTRUMENT_SCIENTIST granted" for u in self.roles_granted]
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "experiments_added": self.experiments_added,
            "experiments_updated": [{"id": e, "fields": f} for e, f in self.experiments_updated],
            "members_added": [{"experiment": e, "username": u} for e, u in self.members_added],
            "members_removed": [{"experiment": e, "username": u} for e, u in self.members_removed],
            "scientists_added": [{"instrument": i, "username": u} for i, u in self.scientists_added],
            "scientists_removed": [{"instrument": i, "username": u} for i, u in self.scientists_removed],
            "users_created": self.users_added, "roles_granted": self.roles_granted,
            "unchanged": self.unchanged, "identities_set": self.identities_set,
        }


_WS = re.compile(r"\s*")


class _Lines:
    """Line numbers of positions in a text, asked in increasing order (one pass over a large file)."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.line = text, 0, 1

    def at(self, pos: int) -> int:
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


def _json_array(text: str, i: int, lines: _Lines) -> list[tuple[int, Any]]:
    """The items of the (valid) JSON array at ``text[i]``, each with the line it starts on."""
    decoder, out = json.JSONDecoder(), []
    i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
    while text[i] != "]":
        value, end = decoder.raw_decode(text, i)
        out.append((lines.at(i), value))
        i = _WS.match(text, end).end()  # type: ignore[union-attr]
        if text[i] == ",":
            i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
    return out


def _json_members(text: str, i: int) -> dict[str, int]:
    """Where each member's value starts in the (valid) JSON object at ``text[i]``."""
    decoder, out = json.JSONDecoder(), {}
    i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
    while text[i] != "}":
        key, end = decoder.raw_decode(text, i)
        i = _WS.match(text, _WS.match(text, end).end() + 1).end()  # type: ignore[union-attr]
        out[key] = i
        _, end = decoder.raw_decode(text, i)
        i = _WS.match(text, end).end()  # type: ignore[union-attr]
        if text[i] == ",":
            i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
    return out


def _json_records(text: str, origin: str) -> tuple[list[tuple[int, Any]], list[tuple[int, Any]] | None]:
    """The experiments (and the ``instruments`` list, if any) of a JSON export, with their lines."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFileError([f"{origin}: line {exc.lineno}: not valid JSON: {exc.msg}"]) from None
    start = _WS.match(text).end()  # type: ignore[union-attr]
    lines = _Lines(text)
    if isinstance(data, list):
        return _json_array(text, start, lines), None
    if isinstance(data, dict) and isinstance(data.get("experiments"), list):
        unknown = sorted(set(data) - {"experiments", "instruments"})
        if unknown:
            raise ImportFileError([f"{origin}: unknown key(s): {', '.join(unknown)}"])
        where = _json_members(text, start)
        instruments = data.get("instruments")
        if instruments is not None and not isinstance(instruments, list):
            raise ImportFileError([f"{origin}: line {lines.at(where['instruments'])}: field 'instruments': "
                                   "expected a list of instruments"])
        # Positions in increasing order: the line counter goes one way.
        found: dict[str, list[tuple[int, Any]]] = {}
        for key in sorted((k for k in ("experiments", "instruments") if k in data), key=lambda k: where[k]):
            found[key] = _json_array(text, where[key], lines)
        return found["experiments"], found.get("instruments")
    raise ImportFileError([f"{origin}: expected a list of experiments (or {{\"experiments\": [...]}})"])


def _csv_records(text: str, origin: str) -> list[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    fieldnames = reader.fieldnames or []
    missing = [c for c in ("id", "proposal", "instrument", "start_date", "end_date") if c not in fieldnames]
    if missing:
        raise ImportFileError([f"{origin}: line 1: missing CSV column(s): {', '.join(missing)}"])
    unknown = [c for c in fieldnames if c not in CSV_COLUMNS]
    if unknown:
        raise ImportFileError([f"{origin}: line 1: unknown CSV column(s): {', '.join(unknown)}"])
    out = []
    try:
        for row in reader:
            cells = [v for k, v in row.items() if k is not None and v is not None]
            # Where the row starts: it ends at line_num, less the line breaks inside its quoted cells.
            line = reader.line_num - sum(v.count("\n") for v in cells)
            if None in row:
                raise ImportFileError([f"{origin}: line {line}: more cells than columns"])
            out.append((line, {k: v for k, v in row.items() if v is not None}))
    except csv.Error as exc:
        raise ImportFileError([f"{origin}: line {reader.line_num}: not valid CSV: {exc}"]) from None
    return out


def _problems(where: str, exc: ValidationError) -> list[str]:
    return [f"{where}: field '{'.'.join(str(p) for p in err['loc']) or '(entry)'}': {err['msg']}" for err in exc.errors()]


def _validated(records: list[tuple[int, Any]], model: type[M], key: str, noun: str, what: str, origin: str,
               problems: list[str]) -> list[tuple[int, M]]:
    """Each record (with its line) checked by ``model``: one that is not an object, does not
    validate, or repeats another's ``key`` is a problem naming its line, ``noun`` and field."""
    seen: dict[str, int] = {}
    out: list[tuple[int, M]] = []
    for line, raw in records:
        name = raw.get(key) if isinstance(raw, dict) else None
        where = f"{origin}: line {line}: " + (f"{noun} {name[:64]!r}" if isinstance(name, str) else noun)
        if not isinstance(raw, dict):
            problems.append(f"{where}: expected an object")
            continue
        try:
            spec = model.model_validate(raw)
        except ValidationError as exc:
            problems.extend(_problems(where, exc))
            continue
        value = getattr(spec, key)
        if value in seen:
            problems.append(f"{where}: field '{key}': duplicate {what} (also line {seen[value]})")
            continue
        seen[value] = line
        out.append((line, spec))
    return out


def parse_text(text: str, fmt: str, origin: str = "") -> ImportData:
    """Validate a whole export (``fmt`` json or csv): every problem found, each naming its line and
    field, or the experiments and instruments to import."""
    origin = origin or "(export)"
    if len(text) > MAX_FILE_BYTES:
        raise ImportFileError([f"{origin}: larger than {MAX_FILE_BYTES} bytes"])
    if fmt not in FORMATS:
        raise ImportFileError([f"{origin}: unknown format {fmt!r} (json or csv)"])
    text = text.removeprefix("\ufeff")
    raw_instruments: list[tuple[int, Any]] | None
    if fmt == "csv":
        records, raw_instruments = _csv_records(text, origin), None
    else:
        records, raw_instruments = _json_records(text, origin)
    problems: list[str] = []
    data = ImportData(experiments=[], origin=origin)
    for line, spec in _validated(records, ExperimentSpec, "id", "entry", "experiment id", origin, problems):
        data.lines[spec.id] = line
        data.experiments.append(spec)

    # The scientists the file states, per instrument: the union of what its entries say.
    stated: dict[str, dict[str, ScientistSpec]] = {}
    for spec in data.experiments:
        if spec.instrument_scientists is not None:
            people = stated.setdefault(spec.instrument, {})
            for person in spec.instrument_scientists:
                people.setdefault(person.username, person)
    for _line, inst in _validated(raw_instruments or [], InstrumentSpec, "name", "instrument", "instrument", origin,
                                  problems):
        people = stated.setdefault(inst.name, {})
        for person in inst.scientists:
            people.setdefault(person.username, person)
    if problems:
        raise ImportFileError(problems)
    if raw_instruments is not None or stated:
        data.instruments = [InstrumentSpec(name=name, scientists=list(people.values()))
                            for name, people in stated.items()]
    return data


def parse_file(path: Path) -> ImportData:
    """Read and validate an export file: CSV when its name ends in .csv, else JSON."""
    if not path.is_file():
        raise ImportFileError([f"{path}: no such file"])
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ImportFileError([f"{path}: larger than {MAX_FILE_BYTES} bytes"])
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFileError([f"{path}: not UTF-8 text: {exc.reason}"]) from None
    return parse_text(text, "csv" if path.suffix.lower() == ".csv" else "json", str(path))


def _identities(session: Session, data: ImportData, limits: PosixSettings) -> dict[str, Posix]:
    """Each member's unix identity in the file, checked as a whole before anything is written:
    values in range, one identity per member, one member per uid, no uid another account has."""
    problems: list[str] = []
    found: dict[str, tuple[Posix, str]] = {}
    owners: dict[int, str] = {}
    prefix = f"{data.origin}: " if data.origin else ""
    for spec in data.experiments:
        for m in spec.members:
            raw = Posix(m.uid_number, m.gid_number, tuple(m.extra_gids), m.home_path)
            if raw.is_empty():
                continue
            where = f"{data.where(spec.id)}: member {m.username}"
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


def _subjects(session: Session, data: ImportData, users: dict[str, User]) -> dict[str, str]:
    """Each person's subject at the identity provider, checked as a whole before anything is
    written: one subject per person in the file, one person per subject, and never another
    account's, nor a new one for an account already linked (the link is how a login finds its
    account: changing it would hand the account to someone else)."""
    problems: list[str] = []
    prefix = f"{data.origin}: " if data.origin else ""
    stated: list[tuple[str, MemberSpec | ScientistSpec]] = [
        (data.where(e.id), m) for e in data.experiments for m in e.members
    ] + [(f"{prefix}instrument {i.name!r}", m) for i in data.instruments or [] for m in i.scientists]
    found: dict[str, str] = {}
    owners: dict[str, str] = {}
    for where, spec in stated:
        if spec.subject is None:
            continue
        if found.setdefault(spec.username, spec.subject) != spec.subject:
            problems.append(f"{where}: member {spec.username}: field 'subject': a different subject than "
                            "elsewhere in this file")
        elif owners.setdefault(spec.subject, spec.username) != spec.username:
            problems.append(f"{where}: member {spec.username}: field 'subject': also {owners[spec.subject]}'s "
                            "in this file")
    if found:
        for other in session.scalars(select(User).where(User.external_id.in_(list(owners)))):
            name = owners[other.external_id]  # type: ignore[index]
            if other.username != name:
                problems.append(f"{prefix}member {name}: field 'subject': already the identity of {other.username}")
        for name, subject in found.items():
            user = users.get(name)
            if user is not None and user.external_id is not None and user.external_id != subject:
                problems.append(f"{prefix}member {name}: field 'subject': {name} is linked to another identity")
    if problems:
        raise ImportFileError(sorted(set(problems), key=problems.index))
    return found


def import_experiments(
    actor: Actor, session: Session, clock: Clock, data: ImportData | list[ExperimentSpec], *, default_quota: int = 2,
    limits: PosixSettings | None = None, origin: str = "", reserved: Collection[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Upsert the export's experiments and members, and set the scientists of the instruments it
    states them for (granting them INSTRUMENT_SCIENTIST, which the support rule asks for; a scientist
    removed keeps the role, which alone shows no instrument's machines). Members' unix identities
    are taken unless the identity provider gave them (an earlier source, ``visa.users.service.SOURCES``).
    A new person may not have a reserved name (``reserved``, default ``reserved_usernames()``).
    Flushes, never commits: the caller's one transaction holds it all, or none of it."""
    require(actor, "import_experiments")
    if isinstance(data, list):
        data = ImportData(experiments=data)
    if origin:
        data.origin = origin
    specs = data.experiments
    result = ImportResult()
    now = clock.now()
    limits = limits or PosixSettings()
    instruments = {i.name: i for i in session.scalars(select(Instrument))}
    proposals = {p.identifier: p for p in session.scalars(select(Proposal))}
    experiments = {e.external_id: e for e in session.scalars(select(Experiment))}
    people: dict[str, MemberSpec | ScientistSpec] = {m.username: m for s in specs for m in s.members}
    for inst_spec in data.instruments or []:
        for person in inst_spec.scientists:
            people.setdefault(person.username, person)
    usernames = set(people)
    users = {u.username: u for u in session.scalars(select(User).where(User.username.in_(usernames)))} if usernames else {}
    refused = sorted((usernames - users.keys()) & (reserved_usernames() if reserved is None else set(reserved)))
    if refused:
        raise ImportFileError([f"{data.origin + ': ' if data.origin else ''}member {name}: field 'username': the "
                               f"username {name!r} is reserved (root, visa's own unix account or the activity "
                               "probe's)" for name in refused])
    identities = _identities(session, data, limits)
    subjects = _subjects(session, data, users)

    def person(spec: MemberSpec | ScientistSpec) -> User:
        user = users.get(spec.username)
        if user is None:
            user = users[spec.username] = User(
                username=spec.username, full_name=spec.full_name, email=spec.email,
                instance_quota=default_quota, active=True, created_at=now,
                external_id=subjects.get(spec.username),
            )
            session.add(user)
            result.users_created += 1
            result.users_added.append(spec.username)
        else:
            user.full_name = spec.full_name or user.full_name
            user.email = spec.email or user.email
            if user.external_id is None and spec.username in subjects:
                user.external_id = subjects[spec.username]
        return user

    def instrument(name: str) -> Instrument:
        inst = instruments.get(name)
        if inst is None:
            inst = instruments[name] = Instrument(name=name)
            session.add(inst)
        return inst

    total = len(specs) + len(data.instruments or [])
    for done, spec in enumerate(specs):
        if progress:
            progress(done, total)
        inst = instrument(spec.instrument)
        prop = proposals.get(spec.proposal)
        if prop is None:
            prop = proposals[spec.proposal] = Proposal(identifier=spec.proposal, title=spec.proposal_title)
            session.add(prop)
        if spec.proposal_title:
            prop.title = spec.proposal_title
        prop.public_at = spec.public_at or prop.public_at

        members = []
        for m in spec.members:
            user = person(m)
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
            "doi": spec.doi, "data_url": spec.data_url, "logbook_url": spec.logbook_url,
        }
        if exp is None:
            exp = experiments[spec.id] = Experiment(external_id=spec.id, members=members, **values)
            session.add(exp)
            result.created += 1
            result.experiments_added.append(spec.id)
            result.members_added.extend((spec.id, u.username) for u in members)
            continue
        changed = [k for k, v in values.items() if getattr(exp, k) is not v and getattr(exp, k) != v]
        before, after = {u.username for u in exp.members}, {u.username for u in members}
        result.members_added.extend((spec.id, u) for u in sorted(after - before))
        result.members_removed.extend((spec.id, u) for u in sorted(before - after))
        if before != after:
            changed.append("members")
        for k, v in values.items():
            setattr(exp, k, v)
        exp.members = members
        if changed:
            result.updated += 1
            result.experiments_updated.append((spec.id, changed))
        else:
            result.unchanged += 1

    for done, inst_spec in enumerate(data.instruments or [], start=len(specs)):
        if progress:
            progress(done, total)
        inst = instrument(inst_spec.name)
        scientists = [person(p) for p in inst_spec.scientists]
        before, after = {u.username for u in inst.scientists}, {u.username for u in scientists}
        result.scientists_added.extend((inst.name, u) for u in sorted(after - before))
        result.scientists_removed.extend((inst.name, u) for u in sorted(before - after))
        inst.scientists = scientists
        session.flush()
        for user in scientists:
            if user.username in after - before and ensure_scientist_role(actor, session, clock, user):
                result.roles_granted.append(user.username)
    if progress:
        progress(total, total)
    session.flush()
    record(actor, session, clock, "experiments.import", target_type="experiments",
           created=result.created, updated=result.updated, users_created=result.users_created,
           identities_set=result.identities_set, scientists_added=len(result.scientists_added),
           scientists_removed=len(result.scientists_removed))
    return result


def ensure_scientist_role(actor: Actor, session: Session, clock: Clock, user: User) -> bool:
    """Grant INSTRUMENT_SCIENTIST (without end) unless the user holds it; True when granted."""
    held = next((g for g in user.grants if g.role == Role.INSTRUMENT_SCIENTIST), None)
    if held is not None and held.expires_at is None:
        return False
    grant_role(actor, session, clock, user, Role.INSTRUMENT_SCIENTIST)
    return True


def run_import(
    actor: Actor, database: Database, clock: Clock, data: ImportData, settings: Settings, *, dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """One import in one transaction (the command line's and the scheduled job's): committed whole,
    or, in a dry run or on any error, rolled back whole."""
    session = database.sessionmaker()
    committed = False
    try:
        result = import_experiments(
            actor, session, clock, data, default_quota=settings.default_quota, limits=settings.posix,
            reserved=reserved_usernames(settings.provisioning.probe_username), progress=progress,
        )
        if not dry_run:
            session.commit()
            committed = True
    finally:
        end_unit_of_work(session, committed=committed)
    return result
