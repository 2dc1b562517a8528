"""Serve one OpenStack WSGI application with gunicorn, on loopback.

Usage: ``python -m sandbox_plugins.serve NAME PORT module:attribute``

Nova and Neutron read ``sys.argv`` as their own command line when the application is
imported, so it is cleared first.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Any

from gunicorn.app.base import BaseApplication


class _App(BaseApplication):  # type: ignore[misc]
    def __init__(self, name: str, port: int, target: str) -> None:
        self._name, self._port, self._target = name, port, target
        super().__init__()

    def load_config(self) -> None:
        settings = {
            "bind": f"127.0.0.1:{self._port}",
            "workers": 1,
            "worker_class": "gthread",
            "threads": 8,
            "timeout": 300,
            "graceful_timeout": 5,
            # gunicorn closes an idle kept-alive connection after 2 s by default: a client that
            # polls every 2 s (as openstacksdk callers do) then reuses a socket the server is
            # closing and gets "Remote end closed connection without response". Idle
            # connections wait in the poller, not in a thread, so keeping them longer is cheap.
            "keepalive": 120,
            "proc_name": f"visa-sandbox-{self._name}",
            # One control socket per user by default: several gunicorns would fight over it.
            "control_socket_disable": True,
            # Nova asks Neutron about a page of servers in one GET with every id in the URL.
            "limit_request_line": 0,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        module, _, attr = self._target.partition(":")
        app = getattr(import_module(module), attr)
        if module.startswith("neutron."):
            # Neutron lists ports through ``Port.port_forwardings``, a backref that exists only once
            # SQLAlchemy has configured its mappers, which the first query of another kind does:
            # when a port listing comes first (Nova's, at a server's build), every one fails with
            # "type object 'Port' has no attribute 'port_forwardings'" until then. Its plugins
            # (port forwarding among them) are loaded with the application: configure now.
            # Its policy enforcer is made lazily, unlocked, by the first request that needs it:
            # another request arriving meanwhile (gunicorn's threads) finds it without its rules
            # and is refused ("rule:create_network is disallowed by policy", for an admin).
            from neutron import policy
            from sqlalchemy.orm import configure_mappers

            configure_mappers()
            policy.init()
        return app


def main() -> None:
    name, port, target = sys.argv[1:4]
    sys.argv = [name]
    _App(name, int(port), target).run()


if __name__ == "__main__":
    main()
