"""The ``visa`` command line. Every command calls the same services as the web, as the system actor.

One module per command group (``db``, ``serve``: init, demo and the servers, ``catalogue``,
``experiments``, ``users``, ``clouds``, ``instances``, ``usage``, ``bookings``), what they share in ``common`` (the settings
and database, the domain errors' exit status, the one ``--json`` emitter); here, the root group.
"""

from __future__ import annotations

import click

import visa.models  # noqa: F401  (every mapped class known before the first query)
from visa.cli import bookings, catalogue, clouds, db, experiments, instances, serve, usage, users
from visa.cli.common import VisaGroup


@click.group(cls=VisaGroup)
@click.version_option(package_name="visa", prog_name="visa")
def main() -> None:
    """visa: remote data-analysis machines in the browser."""


for _command in (db.db, serve.init, serve.demo, serve.run, serve.web, serve.gateway, serve.scheduler,
                 serve.check_config, catalogue.catalogue, experiments.experiments, experiments.instruments, users.users,
                 clouds.clouds, instances.instances, usage.usage, bookings.bookings):
    main.add_command(_command)
