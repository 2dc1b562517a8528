"""The scheduled import and the support rule's tests run on the services of tests/services.py."""

from tests.services import sched_settings, services, smtp_server, world  # noqa: F401 (fixtures)
