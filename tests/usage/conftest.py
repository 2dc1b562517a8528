"""The scheduler's fixtures (services on the test database, a world of users and a plan)."""

from tests.services import sched_settings, services, smtp_server, world  # noqa: F401
