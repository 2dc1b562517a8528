"""The command and sync tests run on the services and SMTP server of tests/services.py."""

from tests.services import inbox, sched_settings, services, smtp_server, world  # noqa: F401 (fixtures)
