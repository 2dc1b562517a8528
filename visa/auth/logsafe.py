"""Bounded, single-line renderings of user input for logs and the audit log.

Anything a client sends (usernames, headers, tokens' claims) may be huge or carry line
breaks that forge log lines: log ``clip(value)``, never the value itself.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clip(value: object, limit: int = 64) -> str:
    """At most ``limit`` characters, control characters escaped, with a mark when cut."""
    text = value if isinstance(value, str) else repr(value)
    extra = len(text) - limit
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text[:limit])
    return f"{text}…(+{extra})" if extra > 0 else text
