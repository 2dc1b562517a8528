"""The outbox sends to the real SMTP server of tests/services.py."""

from tests.services import inbox, sched_settings, services, smtp_server, world  # noqa: F401 (fixtures)
