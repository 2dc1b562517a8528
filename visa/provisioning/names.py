"""Validation of every value that ends up in a path, a command line or an fstab line.

Values come from the user office, the identity source or the catalogue: none is trusted.
A refused value raises ``InvalidInput`` naming the field; the value itself is shown
shortened, so an oversized one cannot flood the logs.
"""

from __future__ import annotations

import posixpath
import re

from visa.errors import InvalidInput
from visa.users.models import USERNAME_PATTERN

# A directory name: starts with a letter or digit, no separator, space, quote or shell metacharacter.
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
_USERNAME = re.compile(USERNAME_PATTERN)
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]{0,99}")
_REPOSITORY = re.compile(r"[a-z0-9][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+")
_KEYBOARD = re.compile(r"([a-z]{2})-([a-z]{2})(-[a-z]+)?")
_SECRET = re.compile(r"[A-Za-z0-9_-]{8,128}")
_SSH_KEY = re.compile(
    r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/]+={0,3}( [\x21-\x7e ]{0,200})?"
)
_GECOS_DROP = re.compile(r"[\x00-\x1f\x7f:,=\\]")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def path_component(value: object, field: str) -> str:
    """A proposal, beamline or other single directory name."""
    if not isinstance(value, str) or not _COMPONENT.fullmatch(value) or ".." in value:
        raise InvalidInput(
            f"{field} {_shown(value)} cannot be used as a directory name "
            "(letters, digits, '_', '.', '+', '-' only; no '..', '/', spaces or shell characters)",
            field=field,
        )
    return value


def username(value: object, field: str = "username") -> str:
    if not isinstance(value, str) or not _USERNAME.fullmatch(value) or ".." in value:
        raise InvalidInput(f"{field} {_shown(value)} is not a valid account name", field=field)
    return value


def absolute_path(value: object, field: str) -> str:
    """An absolute path whose every component is a plain directory name."""
    if not isinstance(value, str) or not value.startswith("/") or posixpath.normpath(value) != value:
        raise InvalidInput(f"{field} {_shown(value)} is not a normalised absolute path", field=field)
    for part in value.strip("/").split("/"):
        if part:
            path_component(part, field)
    return value


def package_name(value: object, field: str = "packages") -> str:
    if not isinstance(value, str) or not _PACKAGE.fullmatch(value):
        raise InvalidInput(f"{field}: {_shown(value)} is not a package name", field=field)
    return value


def cvmfs_repository(value: object, field: str = "cvmfs_repositories") -> str:
    if not isinstance(value, str) or len(value) > 100 or not _REPOSITORY.fullmatch(value):
        raise InvalidInput(f"{field}: {_shown(value)} is not a CVMFS repository name", field=field)
    return value


def secret(value: object, field: str = "secret") -> str:
    # The value is never shown: it is a secret.
    if not isinstance(value, str) or not _SECRET.fullmatch(value):
        raise InvalidInput(f"{field} must be 8-128 URL-safe characters", field=field)
    return value


def ssh_public_key(value: object, field: str = "probe_public_key") -> str:
    if not isinstance(value, str) or not _SSH_KEY.fullmatch(value.strip()):
        raise InvalidInput(f"{field} is not a one-line OpenSSH public key", field=field)
    return value.strip()


# The layouts the create page offers and the API accepts for new instances: each renders with
# ``keyboard`` below (a test checks every one), so nothing is offered that is then refused.
KEYBOARD_LAYOUTS: tuple[tuple[str, str], ...] = (
    ("en-us", "English (US)"), ("en-gb", "English (UK)"), ("fr-fr", "French"), ("de-de", "German"),
    ("it-it", "Italian"), ("es-es", "Spanish"), ("fr-ch", "Swiss French"), ("de-ch", "Swiss German"),
    ("fr-be", "Belgian"), ("nl-nl", "Dutch"), ("pt-pt", "Portuguese"), ("sv-se", "Swedish"),
    ("da-dk", "Danish"), ("nb-no", "Norwegian"), ("fi-fi", "Finnish"), ("pl-pl", "Polish"),
    ("cs-cz", "Czech"), ("ja-jp", "Japanese"), ("fr-ca", "French (Canada)"),
)
KEYBOARD_NAMES = frozenset(name for name, _ in KEYBOARD_LAYOUTS)


def keyboard(value: object, field: str = "keyboard_layout") -> tuple[str, str]:
    """``en-us``, ``fr-fr-azerty``, ``fr-ch-qwertz``… -> XKB (layout, variant)."""
    match = _KEYBOARD.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise InvalidInput(f"{field} {_shown(value)} is not a layout such as en-us or fr-fr", field=field)
    language, country = match.group(1), match.group(2)
    if country == "ch" and language == "fr":
        return "ch", "fr"  # Swiss French; plain "ch" is Swiss German
    if country == "ca" and language == "fr":
        return "ca", "fr"
    return country, ""  # XKB names layouts by country (us, gb, de, ch, cz, jp...)


def screen(width: object, height: object) -> tuple[int, int]:
    if not isinstance(width, int) or not 640 <= width <= 7680:
        raise InvalidInput("screen_width must be between 640 and 7680", field="screen_width")
    if not isinstance(height, int) or not 480 <= height <= 4320:
        raise InvalidInput("screen_height must be between 480 and 4320", field="screen_height")
    return width, height


def gecos(value: str | None) -> str:
    """A full name made safe for /etc/passwd (':' or a newline would corrupt it)."""
    return _GECOS_DROP.sub(" ", value or "").strip()[:100]
