"""Mount sources: what one is made of, and the rules a site's templates follow.

The settings hold the values (``ProvisioningSettings``); the rules are here, and are checked
where settings come in: at the entry points for the site's own (``check_sources``: the command
line, the app factory), at a cloud's registration and again at render for a cloud's overrides
(``visa.provisioning.site.site_for_cloud``), and at render for the very user (``mounts.home_mount``).
"""

from __future__ import annotations

from visa.errors import InvalidInput
from visa.settings import ProvisioningSettings

DATA_PLACEHOLDERS = {"proposal", "beamline"}


def _placeholders(template: str) -> set[str]:
    import string

    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"not a template: {exc}") from None


def split_source(source: str) -> tuple[str, str]:
    """(server, path) of a mount source: ``host:/path`` (NFS), ``mon1,mon2:/path`` (CephFS) or
    ``/path`` (bind)."""
    if source.startswith("/"):
        return "", source
    server, sep, path = source.partition(":")
    return (server, path) if sep else ("", source)


def home_source_inside(source: str, root: str) -> bool:
    """Whether a rendered home source is a directory strictly inside ``root`` (same server,
    a normalised path below the root's, no ``..``)."""
    import posixpath

    server, path = split_source(source)
    root_server, root_path = split_source(root)
    if server != root_server or not path.startswith("/") or posixpath.normpath(path) != path:
        return False
    base = posixpath.normpath(root_path)
    return path.startswith(base.rstrip("/") + "/") and path != base


# A sample identity to render a home template with when it is checked: a template that leaves
# its root with these values leaves it for anyone.
_SAMPLE = {"username": "visa-sample", "uid": 123456}


def check_home_template(template: str | None, root: str | None) -> None:
    """Refuse a home template that is not one directory per user inside its root (raises ValueError)."""
    if template is None:
        return
    if not root:
        raise ValueError("home_mount_template needs home_mount_root (the directory every home lies inside)")
    names = _placeholders(template)
    if not names <= {"username", "uid"}:
        raise ValueError(f"home_mount_template: only {{username}} and {{uid}} may be used, not {sorted(names)}")
    if "username" not in names and "uid" not in names:
        raise ValueError("home_mount_template must contain {username} or {uid}: one home per user")
    rendered = template.format(**_SAMPLE)
    if not home_source_inside(rendered, root):
        raise ValueError(f"home_mount_template renders {rendered!r}, outside home_mount_root {root!r}")


def check_sources(site: ProvisioningSettings, where: str = "provisioning") -> None:
    """Refuse a site whose templates break the rules (InvalidInput naming the setting under ``where``)."""
    for name in ("raw_mount_template", "processed_mount_template"):
        try:
            names = _placeholders(getattr(site, name))
        except ValueError as exc:
            raise InvalidInput(f"{where}.{name}: {exc}", field=f"{where}.{name}") from None
        if not names <= DATA_PLACEHOLDERS:
            raise InvalidInput(f"{where}.{name}: only {{proposal}} and {{beamline}} may be used, not {sorted(names)}",
                               field=f"{where}.{name}")
    try:
        check_home_template(site.home_mount_template, site.home_mount_root)
    except ValueError as exc:
        raise InvalidInput(f"{where}.home_mount_template: {exc}", field=f"{where}.home_mount_template") from None
