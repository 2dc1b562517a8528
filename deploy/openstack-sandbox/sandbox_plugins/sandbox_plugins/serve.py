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
        return getattr(import_module(module), attr)


def main() -> None:
    name, port, target = sys.argv[1:4]
    sys.argv = [name]
    _App(name, int(port), target).run()


if __name__ == "__main__":
    main()
