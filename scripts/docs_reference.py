#!/usr/bin/env python3
"""Writes the documentation site's reference pages from the code itself, before `mkdocs build`:

* ``reference/rest.md`` from the OpenAPI document visa serves (visa.openapi.build_document);
* ``reference/cli.md`` from the click commands (walks visa.cli.main);
* ``reference/settings.md`` from the pydantic models of visa/settings.py.

Usage: scripts/docs_reference.py [OUT_DIR]   (default: docs/reference, not tracked)
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import typing
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HTTP_ORDER = ("get", "post", "put", "patch", "delete", "head", "options")


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell (no HTML, no column breaks, one line)."""
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"\s+", " ", s.replace("|", "\\|")).strip()


def _text(text: str) -> str:
    """Prose from a docstring or description: HTML-escaped, kept as paragraphs."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").strip()


def _code(text: Any) -> str:
    s = str(text).replace("|", "\\|")
    return f"`` {s} ``" if "`" in s else f"`{s}`"


def slug(*parts: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", " ".join(parts).lower()).strip("-")


# --- REST --------------------------------------------------------------------------------------


def openapi_document() -> dict[str, Any]:
    """The document /api/openapi.json serves, from an app on a throwaway SQLite database."""
    from visa.openapi import build_document
    from visa.settings import Settings
    from visa.web.app import create_app

    with tempfile.TemporaryDirectory(prefix="visa-docs-") as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=f"sqlite:///{tmp}/visa.db", secret_key="docs")
        app = create_app(settings, check_schema=False)
        try:
            return build_document(app)
        finally:
            app.extensions["visa"].close()


def _schema_name(schema: dict[str, Any] | None) -> str:
    if not schema:
        return ""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#schema-{slug(name)})"
    if schema.get("type") == "array":
        return f"list of {_schema_name(schema.get('items'))}"
    if "anyOf" in schema:
        return " or ".join(_schema_name(s) or "any" for s in schema["anyOf"])
    return _cell(schema.get("type", "object"))


def _content(block: dict[str, Any]) -> str:
    out = []
    for media, body in (block.get("content") or {}).items():
        name = _schema_name(body.get("schema"))
        out.append(f"{_code(media)} {name}".strip())
    return "; ".join(out)


def rest_markdown(document: dict[str, Any]) -> str:
    info = document["info"]
    lines = [
        "# REST API reference",
        "",
        f"Generated from the OpenAPI document of visa {_cell(info['version'])}. A running visa serves the "
        "same document at `/api/openapi.json` and a browsable page at `/api/docs`.",
        "",
        _text(info.get("description", "")),
        "",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in document["paths"].items():
        for method in sorted(item, key=lambda m: HTTP_ORDER.index(m) if m in HTTP_ORDER else 99):
            op = item[method]
            by_tag.setdefault((op.get("tags") or ["other"])[0], []).append((method, path, op))
    lines += ["## Operations", ""]
    for tag in sorted(by_tag):
        lines += [f"- [{_cell(tag)}](#{slug('tag', tag)})"]
    lines.append("")
    for tag in sorted(by_tag):
        lines += [f"## {_cell(tag)} {{#{slug('tag', tag)}}}", ""]
        for method, path, op in by_tag[tag]:
            lines += [f"### {method.upper()} {_cell(path)} {{#{slug(op['operationId'])}}}", ""]
            if op.get("summary"):
                lines += [_text(op["summary"]), ""]
            if op.get("description"):
                lines += [_text(op["description"]), ""]
            if op.get("security") == []:
                lines += ["No authentication.", ""]
            params = op.get("parameters") or []
            if params:
                lines += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
                for p in params:
                    lines.append(
                        f"| {_code(p['name'])} | {p['in']} | {_schema_name(p.get('schema'))} | "
                        f"{'yes' if p.get('required') else 'no'} | {_cell(p.get('description', ''))} |"
                    )
                lines.append("")
            if op.get("requestBody"):
                lines += [f"Body: {_content(op['requestBody'])}", ""]
            lines += ["| status | meaning | body |", "|---|---|---|"]
            for status, resp in op.get("responses", {}).items():
                if "$ref" in resp:
                    resp = document["components"]["responses"][resp["$ref"].rsplit("/", 1)[-1]]
                lines.append(f"| {status} | {_cell(resp.get('description', ''))} | {_content(resp)} |")
            lines.append("")
    lines += ["## Schemas", ""]
    for name, schema in sorted(document["components"]["schemas"].items()):
        lines += [f"### {_cell(name)} {{#schema-{slug(name)}}}", ""]
        if schema.get("description"):
            lines += [_text(schema["description"]), ""]
        props = schema.get("properties") or {}
        if props:
            required = set(schema.get("required") or ())
            lines += ["| field | type | required | description |", "|---|---|---|---|"]
            for field, sub in props.items():
                lines.append(
                    f"| {_code(field)} | {_schema_name(sub) or _cell(sub.get('enum', ''))} | "
                    f"{'yes' if field in required else 'no'} | {_cell(sub.get('description', ''))} |"
                )
            lines.append("")
        elif "enum" in schema:
            lines += ["One of: " + ", ".join(_code(v) for v in schema["enum"]), ""]
    return "\n".join(lines) + "\n"


# --- CLI ---------------------------------------------------------------------------------------


def _commands(cmd: click.Command, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], click.Command]]:
    found = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            sub = cmd.commands[name]
            if not sub.hidden:
                found += _commands(sub, (*path, name))
    return found


def cli_markdown(group: click.Group | None = None) -> str:
    if group is None:
        from visa.cli import main as group
    lines = [
        "# Command-line reference",
        "",
        "Generated from the `visa` command's own definitions; `visa COMMAND --help` says the same.",
        "",
    ]
    commands = _commands(group, ("visa",))
    for path, _cmd in commands:
        depth = "  " * (len(path) - 1)
        lines.append(f"{depth}- [{' '.join(path)}](#{slug(*path)})")
    lines.append("")
    for path, cmd in commands:
        name = " ".join(path)
        lines += [f"## {name} {{#{slug(*path)}}}", ""]
        ctx = click.Context(cmd, info_name=name)
        lines += ["```", f"{name} {' '.join(cmd.collect_usage_pieces(ctx))}".rstrip(), "```", ""]
        if cmd.help:
            lines += [_text(click.unstyle(cmd.help)), ""]
        if isinstance(cmd, click.Group):
            subs = [(n, c) for n, c in sorted(cmd.commands.items()) if not c.hidden]
            lines += ["| command | what it does |", "|---|---|"]
            lines += [f"| [{n}](#{slug(*path, n)}) | {_cell(c.get_short_help_str(100))} |" for n, c in subs]
            lines.append("")
        params = [p for p in cmd.get_params(ctx) if not getattr(p, "hidden", False)]
        if params:
            lines += ["| argument or option | type | default | description |", "|---|---|---|---|"]
            for p in params:
                names = (
                    ", ".join(p.opts + p.secondary_opts)
                    if isinstance(p, click.Option)
                    else p.human_readable_name
                )
                default = "" if p.default is None or callable(p.default) or p.default == () else p.default
                if isinstance(p, click.Option) and p.is_flag and not p.default:
                    default = ""
                lines.append(
                    f"| {_code(names)} | {_cell(p.type.name)} | {_code(default) if default != '' else ''} | "
                    f"{_cell(getattr(p, 'help', None) or ('required' if p.required else ''))} |"
                )
            lines.append("")
    return "\n".join(lines) + "\n"


# --- settings ------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def _nested(tp: Any) -> type[BaseModel] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return None


def _default(info: Any) -> str:
    if info.default is not PydanticUndefined:
        value = info.default
    elif info.default_factory is not None:
        try:
            value = info.default_factory()
        except TypeError:
            return "computed"
    else:
        return "required"
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, Path):
        value = str(value)
    try:
        return _code(json.dumps(value))
    except TypeError:
        return _code(value)


def settings_markdown() -> str:
    from visa.settings import Settings

    lines = [
        "# Settings reference",
        "",
        "Generated from `visa/settings.py`. Settings come from the TOML file `VISA_CONFIG` names and from "
        "environment variables: `VISA_<NAME>` for a top-level setting, `VISA_<SECTION>__<NAME>` inside a "
        "section (for example `VISA_OIDC__SERVER_URL`). `visa check-config` validates a configuration.",
        "",
    ]
    sections: list[tuple[str, type[BaseModel]]] = []

    def table(prefix: str, model: type[BaseModel]) -> None:
        lines.extend(["| setting | type | default | description |", "|---|---|---|---|"])
        for name, info in model.model_fields.items():
            key = f"{prefix}{name}"
            nested = _nested(info.annotation)
            desc = _cell(info.description or "")
            if nested is not None:
                sections.append((key, nested))
                desc = f"[section `{key}`](#{slug('section', key)})" + (f": {desc}" if desc else "")
            env = "VISA_" + key.replace(".", "__").upper()
            lines.append(
                f"| {_code(key)} | {_cell(_type_name(info.annotation))} | {_default(info)} | "
                f"{desc} (env {_code(env)}) |"
            )
        lines.append("")

    lines += ["## Top level {#section-top-level}", ""]
    table("", Settings)
    while sections:
        key, model = sections.pop(0)
        lines += [f"## {key} {{#{slug('section', key)}}}", ""]
        if model.__doc__ and model.__doc__ != BaseModel.__doc__:
            lines += [_text(model.__doc__), ""]
        table(key + ".", model)
    return "\n".join(lines) + "\n"


def write(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    pages = {
        "rest.md": rest_markdown(openapi_document()),
        "cli.md": cli_markdown(),
        "settings.md": settings_markdown(),
    }
    written = []
    for name, text in pages.items():
        path = out / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "reference"
    for p in write(target):
        print(f"docs_reference: {p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}")
