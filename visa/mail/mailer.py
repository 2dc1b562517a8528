"""Sending through SMTP, as the settings say (plain, STARTTLS or TLS; optional login)."""

from __future__ import annotations

import contextlib
import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr, formatdate

from visa.mail.render import Rendered
from visa.settings import SmtpSettings

TIMEOUT = 20.0


def message_id(key: str) -> str:
    """A Message-ID derived from the event key: a receiver can recognise a repeat."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@visa>"


def build_message(smtp: SmtpSettings, key: str, recipient: str, email: Rendered, *, site_name: str = "",
                  reply_to: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    # The facility's name as the sender's (a bare address when the sender setting names one already).
    msg["From"] = formataddr((site_name, smtp.sender)) if site_name and "<" not in smtp.sender else smtp.sender
    if reply_to:
        msg["Reply-To"] = reply_to  # answers reach the facility's contact, not an unread mailbox
    msg["To"] = recipient
    msg["Subject"] = email.subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id(key)
    msg["X-Visa-Event"] = key
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(email.text)
    msg.add_alternative(email.html, subtype="html")
    return msg


class Mailer:
    """One SMTP connection, opened on first use and reused for a batch."""

    def __init__(self, smtp: SmtpSettings) -> None:
        self.smtp = smtp
        self._conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.smtp
        conn: smtplib.SMTP
        if s.ssl:
            conn = smtplib.SMTP_SSL(s.host, s.port, timeout=TIMEOUT, context=ssl.create_default_context())
        else:
            conn = smtplib.SMTP(s.host, s.port, timeout=TIMEOUT)
            if s.starttls:
                conn.starttls(context=ssl.create_default_context())
        if s.username:
            conn.login(s.username, s.password or "")
        return conn

    def ensure_connected(self) -> None:
        """Connect, or check that a reused connection still answers (so that a failure
        while sending means the message itself failed, not a stale connection)."""
        if self._conn is not None:
            try:
                code, _ = self._conn.noop()
                if code == 250:
                    return
            except (OSError, smtplib.SMTPException):
                pass
            self.close()
        self._conn = self._connect()

    def send(self, msg: EmailMessage) -> None:
        if self._conn is None:
            self._conn = self._connect()
        self._conn.send_message(msg)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._conn.quit()
            self._conn = None

    def __enter__(self) -> Mailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
