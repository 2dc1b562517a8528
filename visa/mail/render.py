"""Emails rendered from templates: ``<name>.txt`` (first line ``Subject: ...``) and ``<name>.html``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%A %d %B %Y at %H:%M UTC")


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        undefined=StrictUndefined,  # a missing value is a bug, not an empty line in a user's inbox
        keep_trailing_newline=True,
    )
    env.filters["when"] = _when
    return env


def render(name: str, context: dict[str, Any]) -> Rendered:
    env = environment()
    text = env.get_template(f"{name}.txt").render(context)
    first, _, body = text.partition("\n")
    if not first.startswith("Subject: "):
        raise ValueError(f"template {name}.txt must start with a 'Subject: ' line")
    subject = " ".join(first[len("Subject: "):].split())[:255]
    html = env.get_template(f"{name}.html").render(context)
    return Rendered(subject=subject, text=body.lstrip("\n"), html=html)
