"""Emails rendered from templates: ``<name>.txt`` (first line ``Subject: ...``) and ``<name>.html``.

A facility replaces them file by file (settings ``mail.templates_dir``): a file there is read
instead of visa's own of the same name (``_base.html``, the HTML emails' frame, included).
``check_templates`` renders each with the variables visa gives it, for ``visa check-config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    UndefinedError,
    meta,
    select_autoescape,
)

from visa.settings import Settings

TEMPLATES = Path(__file__).parent / "templates"
BASE = "_base.html"


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%A %d %B %Y at %H:%M UTC")


@lru_cache(maxsize=4)
def environment(templates_dir: Path | None = None) -> Environment:
    """Templates from ``templates_dir`` first, then visa's own."""
    own = FileSystemLoader(TEMPLATES)
    env = Environment(
        loader=ChoiceLoader([FileSystemLoader(templates_dir), own]) if templates_dir else own,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        undefined=StrictUndefined,  # a missing value is a bug, not an empty line in a user's inbox
        keep_trailing_newline=True,
    )
    env.filters["when"] = _when
    return env


def common_context(settings: Settings) -> dict[str, Any]:
    """What every email's template is given besides its own variables."""
    return {"base_url": settings.base_url.rstrip("/"), "site": settings.site}


def render(name: str, context: dict[str, Any], templates_dir: Path | None = None) -> Rendered:
    env = environment(templates_dir)
    text = env.get_template(f"{name}.txt").render(context)
    first, _, body = text.partition("\n")
    if not first.startswith("Subject: "):
        raise ValueError(f"template {name}.txt must start with a 'Subject: ' line")
    subject = " ".join(first[len("Subject: "):].split())[:255]
    html = env.get_template(f"{name}.html").render(context)
    return Rendered(subject=subject, text=body.lstrip("\n"), html=html)


def check_templates(templates_dir: Path, samples: dict[str, dict[str, Any]], common: dict[str, Any]) -> list[str]:
    """What is wrong with a facility's templates, each problem naming its file (and variable):
    a file that replaces none of visa's, a syntax error, a variable visa does not give that
    template (``samples``: each template's variables, as examples; ``common``: every template's),
    or an error when rendered with those examples."""
    if not templates_dir.is_dir():
        return [f"{templates_dir}: not a directory"]
    env = environment(templates_dir)
    known = {f"{name}.{ext}" for name in samples for ext in ("txt", "html")} | {BASE}
    problems: list[str] = []
    for path in sorted(templates_dir.iterdir()):
        if path.name not in known:
            problems.append(f"{path}: replaces none of visa's email templates ({', '.join(sorted(known))})")
            continue
        name = path.name.rsplit(".", 1)[0]
        given = set(common) | (set() if path.name == BASE else set(samples[name]))
        try:
            source = path.read_text(encoding="utf-8")
            used = meta.find_undeclared_variables(env.parse(source, path.name, str(path)))
        except TemplateSyntaxError as exc:
            problems.append(f"{path}: line {exc.lineno}: {exc.message}")
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: unreadable: {exc}")
            continue
        for variable in sorted(used - given):
            problems.append(f"{path}: variable '{variable}' is not given to this template "
                            f"(it gets: {', '.join(sorted(given))})")
    if problems:
        return problems
    for name, sample in samples.items():
        for ext in ("txt", "html"):
            file = f"{name}.{ext}"
            where = templates_dir / file if (templates_dir / file).exists() else templates_dir / BASE
            try:
                out = env.get_template(file).render({**common, **sample})
            except UndefinedError as exc:  # an attribute the variable does not have
                problems.append(f"{where}: {exc.message}")
                continue
            except TemplateError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if ext == "txt" and not out.startswith("Subject: "):
                problems.append(f"{where}: the first line must be 'Subject: ...'")
    return sorted(set(problems), key=problems.index)
