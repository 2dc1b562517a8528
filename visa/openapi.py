"""The OpenAPI document, built from the code.

Each REST handler declares what it takes and gives with ``@doc(...)``: pydantic models for
the query, the body and the response. ``build_document(app)`` walks Flask's URL map, so every
route under ``/api`` appears: annotated handlers with their models (each in its feature's
``schemas.py``), and the rest with a generic entry marked ``x-undocumented`` so a missing
annotation is visible rather than silent.

Annotating a handler::

    from visa.openapi import doc

    @bp.get("/things")
    @doc("List things", tags=["things"], query=ThingQuery, response=list[ThingOut])
    def things(): ...

``respond(model, status)`` serialises a response model exactly as documented.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template_string
from pydantic import BaseModel, Field, TypeAdapter

from visa.types import MAX_ID

REF = "#/components/schemas/{model}"
Q = TypeVar("Q", bound=BaseModel)
HTTP_METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Doc:
    summary: str
    tags: tuple[str, ...] = ()
    query: type[BaseModel] | None = None
    body: Any = None  # a pydantic model (JSON), or a media type string for raw bodies
    response: Any = None  # a model, list[Model], a media type string, or None (no body)
    status: int = 200
    description: str = ""
    auth: bool = True
    extra_responses: dict[int, str] = field(default_factory=dict)


def doc(summary: str, **kwargs: Any) -> Any:
    """Decorate a handler with its documentation (put it under the route decorator)."""
    d = Doc(summary=summary, tags=tuple(kwargs.pop("tags", ())), **kwargs)

    def wrap(fn: Any) -> Any:
        fn.__openapi__ = d
        return fn

    return wrap


def respond(
    value: BaseModel | list[BaseModel] | None, status: int = 200, headers: dict[str, str] | None = None,
) -> tuple[Response, int, dict[str, str]]:
    # pydantic writes the JSON itself (its serialiser, in Rust): the same text as
    # json.dumps(model_dump(mode="json")), fields in their declared order, at a fraction of the cost.
    if isinstance(value, list):
        body = b"[" + b",".join(v.model_dump_json().encode() for v in value) + b"]"
    else:
        body = value.model_dump_json().encode() if value is not None else b"{}"
    return Response(body, mimetype="application/json"), status, headers or {}


# --- shared models ---------------------------------------------------------------------------


class ErrorOut(BaseModel):
    """Every error answer of the API."""

    error: str = Field(description="Machine-readable code: invalid_input, not_found, forbidden…")
    message: str
    field: str | None = None
    details: dict[str, Any] | None = None
    problems: list[dict[str, Any]] | None = None


class Ok(BaseModel):
    ok: bool = True


# Streams never end: they are documented but marked so that test generators leave them alone.
STREAMING = frozenset({"text/event-stream"})


# --- building the document --------------------------------------------------------------------

_CONVERTER = re.compile(r"<(?:(?P<conv>[a-zA-Z_]+)(?:\((?P<args>[^)]*)\))?:)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>")


def _expand(rule: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """OpenAPI paths and path parameters of a Flask rule; ``any(a, b)`` becomes one path per value."""
    results: list[tuple[str, list[dict[str, Any]]]] = [("", [])]
    pos = 0
    for m in _CONVERTER.finditer(rule):
        literal = rule[pos:m.start()]
        pos = m.end()
        conv, args, name = m.group("conv"), m.group("args"), m.group("name")
        if conv == "any":
            values = [v.strip().strip("'\"") for v in (args or "").split(",") if v.strip()]
            results = [(p + literal + v, params) for p, params in results for v in values]
            continue
        schema: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": MAX_ID} if conv == "int" else {"type": "string"}
        for key, value in re.findall(r"(min|max)\s*=\s*(\d+)", args or "") if conv == "int" else ():
            schema["minimum" if key == "min" else "maximum"] = int(value)
        if conv in (None, "string", "default"):
            schema["pattern"] = "^[^/]+$"
        param = {"name": name, "in": "path", "required": True, "schema": schema}
        results = [(p + literal + "{" + name + "}", [*params, param]) for p, params in results]
    return [(p + rule[pos:], params) for p, params in results]


class _Schemas:
    """Collects model schemas into components, shared by reference."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def of(self, tp: Any, mode: Literal["validation", "serialization"]) -> dict[str, Any]:
        schema = TypeAdapter(tp).json_schema(ref_template=REF, mode=mode)
        for name, sub in schema.pop("$defs", {}).items():
            self.components.setdefault(name, sub)
        if schema.get("type") == "object" and "title" in schema and isinstance(tp, type):
            name = tp.__name__
            self.components.setdefault(name, schema)
            return {"$ref": REF.format(model=name)}
        return schema

    def query_params(self, model: type[BaseModel]) -> list[dict[str, Any]]:
        schema = model.model_json_schema(ref_template=REF)
        for name, sub in schema.pop("$defs", {}).items():
            self.components.setdefault(name, sub)
        required = set(schema.get("required", []))
        params = []
        for name, prop in schema.get("properties", {}).items():
            param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if prop.get("description"):
                param["description"] = prop["description"]
            if prop.get("type") == "array":
                param["style"], param["explode"] = "form", True
            params.append(param)
        return params


def _media(kind: str, schemas: _Schemas, tp: Any, mode: Literal["validation", "serialization"]) -> dict[str, Any]:
    if isinstance(tp, str):
        return {tp: {"schema": {"type": "string", "format": "binary"} if not tp.startswith("text/") else {"type": "string"}}}
    return {"application/json": {"schema": schemas.of(tp, mode)}}


def _operation(endpoint: str, view: Any, d: Doc | None, schemas: _Schemas, params: list[dict[str, Any]]) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": endpoint.replace(".", "_"), "parameters": list(params)}
    if d is None:
        first = ((view.__doc__ or "").strip().splitlines() or [endpoint])[0]
        op.update(summary=first, tags=[endpoint.split(".")[0].removesuffix("_api")], **{"x-undocumented": True})
        op["responses"] = {
            "200": {"description": "OK", "content": {"application/json": {"schema": {}}}},
            "default": {"$ref": "#/components/responses/Error"},
        }
        return op
    op["summary"] = d.summary
    if d.description:
        op["description"] = d.description
    if d.tags:
        op["tags"] = list(d.tags)
    if not d.auth:
        op["security"] = []
    if d.query is not None:
        op["parameters"] += schemas.query_params(d.query)
    if d.body is not None:
        op["requestBody"] = {"required": True, "content": _media("body", schemas, d.body, "validation")}
    ok: dict[str, Any] = {"description": "OK"}
    if d.response is not None:
        ok["content"] = _media("response", schemas, d.response, "serialization")
        if isinstance(d.response, str) and d.response in STREAMING:
            op["x-streaming"] = True
    op["responses"] = {str(d.status): ok}
    for status, text in d.extra_responses.items():
        op["responses"][str(status)] = {"description": text}
    op["responses"]["default"] = {"$ref": "#/components/responses/Error"}
    if not op["parameters"]:
        del op["parameters"]
    return op


def build_document(app: Flask) -> dict[str, Any]:
    schemas = _Schemas()
    error_schema = schemas.of(ErrorOut, "serialization")
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not (rule.rule == "/api" or rule.rule.startswith("/api/")):
            continue
        view = app.view_functions[rule.endpoint]
        d = getattr(view, "__openapi__", None)
        methods = sorted(m.lower() for m in (rule.methods or ()) if m.lower() in HTTP_METHODS)
        for path, params in _expand(rule.rule):
            for method in methods:
                op = _operation(rule.endpoint, view, d, schemas, params)
                if len(methods) > 1 or path != rule.rule:
                    op["operationId"] += "_" + method + "_" + re.sub(r"\W+", "_", path.rsplit("/", 1)[-1])
                paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "visa REST API",
            "version": _version(),
            "description": (
                "Remote data-analysis machines for facility users. Authenticate with a personal API "
                "token (`Authorization: Bearer visa_…`) or the browser session cookie (then send the "
                "`X-CSRF-Token` header on changes). Errors are JSON: `{error, message, field}`.\n\n"
                "Catalogue edits through `/api/admin/{flavours,images,plans}` are validated like the "
                "catalogue files, but the files stay the source of truth: `visa catalogue apply` "
                "overwrites API edits of every entry the files name."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "responses": {
                "Error": {"description": "Error", "content": {"application/json": {"schema": error_schema}}},
            },
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer", "description": "Personal API token (visa_…)"},
                "session": {"type": "apiKey", "in": "cookie", "name": app.config["SESSION_COOKIE_NAME"]},
            },
        },
        "security": [{"token": []}, {"session": []}],
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("visa")
    except Exception:
        return "0"


# --- serving it ---------------------------------------------------------------------------------

bp = Blueprint("openapi", __name__)

_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>visa API</title><link rel="icon" href="data:,">
{% if vendored %}<link rel="stylesheet" href="{{ url_for('static', filename='vendor/swagger-ui/swagger-ui.css') }}">{% endif %}
<link rel="stylesheet" href="{{ url_for('static', filename='admin/apidocs.css') }}">
</head><body>
<div id="swagger-ui" data-spec="{{ url_for('openapi.document_json') }}"></div>
{% if vendored %}
<script src="{{ url_for('static', filename='vendor/swagger-ui/swagger-ui-bundle.js') }}"></script>
{% endif %}
<script src="{{ url_for('static', filename='admin/apidocs.js') }}"></script>
</body></html>"""


@bp.get("/api/openapi.json")
@doc("This document", tags=["meta"], response=dict[str, Any], auth=False)
def document_json():
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    cached = app.extensions.get("openapi_document")
    if cached is None:
        cached = app.extensions["openapi_document"] = build_document(app)
    return jsonify(cached)


@bp.get("/api/docs")
@doc("Browsable documentation (HTML)", tags=["meta"], response="text/html", auth=False)
def docs_page():
    import os

    static = current_app.static_folder or ""
    vendored = os.path.exists(os.path.join(static, "vendor", "swagger-ui", "swagger-ui-bundle.js"))
    return render_template_string(_DOCS_PAGE, vendored=vendored)


def parse_query(model: type[Q]) -> Q:
    """The query string validated by ``model``; lists take repeated keys, unknown keys are ignored."""
    from flask import request

    data: dict[str, Any] = {}
    for attribute, info in model.model_fields.items():
        name = info.alias or attribute  # a parameter named like a Python keyword ("from") has an alias
        if name not in request.args:
            continue
        origin = getattr(info.annotation, "__origin__", None)
        # Empty values are absent: that is what an untouched field of a filter form sends.
        if origin is list:
            values = [v for v in request.args.getlist(name) if v != ""]
            if values:
                data[name] = values
        elif request.args.get(name, "") != "":
            data[name] = request.args.get(name)
    return model.model_validate(data)
