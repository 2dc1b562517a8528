"""Picks the provider class for a configured cloud, by kind or by entry point."""

from __future__ import annotations

import os
from importlib import import_module
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from visa.clouds.base import Provider
from visa.errors import InvalidInput

if TYPE_CHECKING:
    from visa.settings import Settings

BUILTIN = {
    "local": "visa.clouds.local:LocalProvider",
    "openstack": "visa.clouds.openstack:OpenStackProvider",
}


def provider_class(kind: str) -> type[Provider]:
    target = BUILTIN.get(kind)
    if target is None:
        found = [ep for ep in entry_points(group="visa.clouds") if ep.name == kind]
        if not found:
            raise InvalidInput(f"unknown cloud kind {kind!r}", field="kind")
        return found[0].load()  # type: ignore[no-any-return]
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)  # type: ignore[no-any-return]


def resolve_secrets(config: dict[str, Any]) -> dict[str, Any]:
    """``{"env": "VAR"}`` values are read from the environment, so secrets stay out of the database."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and set(value) == {"env"}:
            out[key] = os.environ.get(value["env"], "")
        elif isinstance(value, dict):
            out[key] = resolve_secrets(value)
        else:
            out[key] = value
    return out


def make_provider(kind: str, name: str, config: dict[str, Any], settings: Settings | None = None) -> Provider:
    """A provider for a cloud's stored config; with ``settings``, the class fills in its own defaults."""
    cls = provider_class(kind)
    config = resolve_secrets(config)
    return cls(name, config) if settings is None else cls.configured(name, config, settings)
