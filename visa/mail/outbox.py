"""Emails sent once per event, even across restarts and leader changes.

The protocol (at-most-once, with retry of what was surely not sent):

1. The decision (warn this instance, delete that one) and a ``SentEmail`` row with the
   event's unique key are written in the same transaction. No decision, no row; a
   repeated decision meets the unique key (and, before it, the conditional UPDATE that
   made the decision) and sends nothing.
2. After the commit, each row is *claimed* by a conditional UPDATE (``error = 'sending'``
   where unsent and unclaimed) committed before talking to the SMTP server, so two
   processes never send the same row.
3. The message is sent; the row is marked ``sent_at``. A failure known to leave nothing
   at the server (connection refused, 4xx answer) turns the claim into ``retry: ...``,
   which the next cycle picks up; a 5xx answer is final (``failed: ...``).
4. A crash (or SIGKILL) between the claim and the mark leaves the row claimed and never
   retried: the message may or may not have left, and we prefer a lost email to a
   duplicate. A crash between step 1 and the claim leaves an unclaimed row, which the next
   cycle sends. Rows claimed but unsent stay visible (``error = 'sending'``) for operators.

Bodies are not stored: they are rendered when sent, from the key (kind, object id, stamp)
and the database as it is then; an event that no longer applies (a warning cancelled by
new activity, an instance extended since) is marked ``obsolete`` and not sent.
"""

from __future__ import annotations

import logging
import smtplib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from visa.clock import Clock
from visa.db import after_commit
from visa.mail.mailer import Mailer, build_message
from visa.mail.models import SentEmail
from visa.mail.render import Rendered, common_context, render
from visa.settings import Settings

log = logging.getLogger(__name__)

CLAIMED = "sending"
RETRY = "retry: "
RETRY_WINDOW = timedelta(hours=48)  # older unsent rows are not worth sending any more

# kind -> builder(session, settings, object_id, stamp) -> (recipient, template context), or None
# when the event no longer applies. Each feature registers its own kinds (e.g. visa.instances.emails),
# so the outbox knows none of them.
Builder = Callable[[Session, Settings, int, str], "tuple[str, dict[str, Any]] | None"]
BUILDERS: dict[str, tuple[str, Builder]] = {}


# template -> an example of each variable its builder gives it: what `visa check-config` renders
# a facility's replacement with (visa.mail.render.check_templates), and the tests visa's own.
SAMPLES: dict[str, dict[str, Any]] = {}


def kind(name: str, template: str, sample: dict[str, Any]) -> Callable[[Builder], Builder]:
    SAMPLES[template] = sample

    def register(fn: Builder) -> Builder:
        BUILDERS[name] = (template, fn)
        return fn

    return register


def event_key(kind_name: str, object_id: int, stamp: str = "") -> str:
    return f"{kind_name}:{object_id}:{stamp}"


def _parse_key(key: str) -> tuple[str, int, str]:
    kind_name, object_id, stamp = key.split(":", 2)
    return kind_name, int(object_id), stamp


def _build(session: Session, settings: Settings, key: str) -> tuple[str, Rendered] | None:
    kind_name, object_id, stamp = _parse_key(key)
    if kind_name not in BUILDERS:
        raise LookupError(f"email kind {kind_name!r} is not registered: import the module that declares it")
    template, builder = BUILDERS[kind_name]
    built = builder(session, settings, object_id, stamp)
    if built is None:
        return None
    recipient, context = built
    return recipient, render(template, {**common_context(settings), **context}, settings.mail.templates_dir)


def enqueue(session: Session, clock: Clock, settings: Settings, kind_name: str, object_id: int,
            stamp: str = "", *, wait: bool = False) -> SentEmail | None:
    """Record an email event in the caller's transaction; it is sent after the commit.

    Returns None when the event was already recorded, or has no recipient. ``wait``: send
    in the committing thread (jobs) rather than in a background thread (requests).
    """
    rows = enqueue_many(session, clock, settings, [(kind_name, object_id, stamp)], wait=wait)
    return rows[0] if rows else None


def enqueue_many(session: Session, clock: Clock, settings: Settings, events: list[tuple[str, int, str]], *,
                 wait: bool = False) -> list[SentEmail]:
    """``enqueue`` for many events at once: one query for the keys already recorded, one insert."""
    if not events:
        return []
    keys = [event_key(*e) for e in events]
    seen = set(session.scalars(select(SentEmail.key).where(SentEmail.key.in_(keys))))
    rows = []
    for key in dict.fromkeys(keys):
        if key in seen:
            continue
        built = _build(session, settings, key)
        if built is None:
            continue
        recipient, rendered = built
        if not recipient:
            log.info("email %s not recorded: no address", key)
            continue
        rows.append(SentEmail(key=key, recipient=recipient, subject=rendered.subject, created_at=clock.now()))
    if not rows:
        return []
    session.add_all(rows)
    session.flush()
    pending = session.info.setdefault("visa_outbox", [])
    if not pending:
        factory = sessionmaker(session.get_bind(), expire_on_commit=False)
        after_commit(session, lambda: _after_commit(factory, settings, clock, pending, wait))
    pending.extend(r.id for r in rows)
    return rows


def _after_commit(factory: sessionmaker[Session], settings: Settings, clock: Clock, ids: list[int],
                  wait: bool) -> None:
    if not settings.smtp.enabled:
        return
    if wait:
        deliver(factory, settings, clock, ids=list(ids))
    else:
        threading.Thread(target=deliver, args=(factory, settings, clock), kwargs={"ids": list(ids)},
                         name="visa-mail", daemon=True).start()


@dataclass
class Delivery:
    sent: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    obsolete: list[str] = field(default_factory=list)


def pending_ids(session: Session, now: datetime, limit: int = 500) -> list[int]:
    """Rows to (re)try: unsent, unclaimed or known not to have left, and recent."""
    return list(session.scalars(
        select(SentEmail.id)
        .where(SentEmail.sent_at.is_(None), or_(SentEmail.error.is_(None), SentEmail.error.like(f"{RETRY}%")),
               SentEmail.created_at >= now - RETRY_WINDOW)
        .order_by(SentEmail.id).limit(limit)
    ))


def deliver(factory: sessionmaker[Session], settings: Settings, clock: Clock, *,
            ids: list[int] | None = None) -> Delivery:
    """Claim and send rows (the given ones, or every pending one)."""
    result = Delivery()
    if not settings.smtp.enabled:
        return result
    if ids is None:
        with factory() as s:
            ids = pending_ids(s, clock.now())
    with Mailer(settings.smtp) as mailer:
        for email_id in ids:
            claimed = _claim(factory, settings, email_id, result)
            if claimed is None:
                continue
            key, recipient, rendered = claimed
            outcome = _send(mailer, settings, key, recipient, rendered)
            values = {"sent_at": clock.now(), "error": None} if outcome is None else {"error": outcome[:2000]}
            with factory.begin() as s:
                s.execute(update(SentEmail).where(SentEmail.id == email_id, SentEmail.error == CLAIMED).values(**values))
            if outcome is None:
                result.sent.append(key)
            else:
                (result.retry if outcome.startswith(RETRY) else result.failed).append(key)
            if outcome is not None and outcome.startswith(RETRY):
                break  # the server is not taking mail now: the next cycle tries again
    if result.sent or result.retry or result.failed:
        log.info("emails: %d sent, %d to retry, %d failed", len(result.sent), len(result.retry), len(result.failed))
    return result


def _claim(factory: sessionmaker[Session], settings: Settings, email_id: int,
           result: Delivery) -> tuple[str, str, Rendered] | None:
    with factory.begin() as s:
        claimed = s.execute(
            update(SentEmail)
            .where(SentEmail.id == email_id, SentEmail.sent_at.is_(None),
                   or_(SentEmail.error.is_(None), SentEmail.error.like(f"{RETRY}%")))
            .values(error=CLAIMED)
        ).rowcount  # type: ignore[attr-defined]
        if not claimed:
            return None  # sent, claimed elsewhere, or final
        row = s.get(SentEmail, email_id)
        if row is None:
            return None
        try:
            built = _build(s, settings, row.key)
        except Exception as exc:  # a template bug must not block the others
            log.exception("email %s cannot be rendered", row.key)
            row.error = f"failed: cannot render: {exc}"[:2000]
            result.failed.append(row.key)
            return None
        if built is None:
            row.error = "obsolete: the event no longer applies"
            result.obsolete.append(row.key)
            return None
        return row.key, row.recipient, built[1]


def _send(mailer: Mailer, settings: Settings, key: str, recipient: str, rendered: Rendered) -> str | None:
    """None when the server accepted the message; else what the row's error becomes."""
    msg = build_message(settings.smtp, key, recipient, rendered, site_name=settings.site.name,
                        reply_to=settings.site.contact_email)
    try:
        mailer.ensure_connected()
    except (OSError, smtplib.SMTPException) as exc:
        return f"{RETRY}cannot reach the SMTP server: {exc}"
    try:
        mailer.send(msg)
    except smtplib.SMTPRecipientsRefused as exc:
        return f"failed: recipient refused: {exc.recipients}"
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        if 400 <= exc.smtp_code < 500:
            mailer.close()
            return f"{RETRY}{exc.smtp_code} {text}"
        return f"failed: {exc.smtp_code} {text}"
    except (OSError, smtplib.SMTPException) as exc:
        mailer.close()
        # The connection broke while sending: the message may have left. Not retried.
        return f"failed: unknown outcome: {exc}"
    return None
