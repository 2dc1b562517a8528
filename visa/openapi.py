"""The OpenAPI document, built from the code.

Each REST handler declares what it takes and gives with ``@doc(...)``: pydantic models for
the query, the body and the response. ``build_document(app)`` walks Flask's URL map, so every
route under ``/api`` appears: annotated handlers with their models, others named in
``KNOWN`` (documented here until their owners annotate them), and the rest with a generic
entry marked ``x-undocumented`` so a missing annotation is visible rather than silent.

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
from datetime import datetime
from typing import Any, Literal, TypeVar

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template_string
from pydantic import BaseModel, Field, TypeAdapter

from visa.auth.schemas import LoginForm, NewToken
from visa.experiments.schemas import ExperimentOut
from visa.instances.schemas import CreateInstance, HandleExtension, NewMember, RequestExtension, RoleChange
from visa.types import MAX_ID, DbId

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


_BY_ENDPOINT: dict[str, Doc] = {}


def doc(summary: str, **kwargs: Any) -> Any:
    """Decorate a handler with its documentation (put it under the route decorator)."""
    d = Doc(summary=summary, tags=tuple(kwargs.pop("tags", ())), **kwargs)

    def wrap(fn: Any) -> Any:
        fn.__openapi__ = d
        return fn

    return wrap


def document(endpoint: str, summary: str, **kwargs: Any) -> None:
    """Document a handler by its endpoint name, without touching its module."""
    _BY_ENDPOINT[endpoint] = Doc(summary=summary, tags=tuple(kwargs.pop("tags", ())), **kwargs)


def respond(value: BaseModel | list[BaseModel] | None, status: int = 200) -> tuple[Response, int]:
    if isinstance(value, list):
        return jsonify([v.model_dump(mode="json") for v in value]), status
    return jsonify(value.model_dump(mode="json") if value is not None else {}), status


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


# --- models of endpoints documented here (their handlers return plain dicts) ------------------


class OwnerOut(BaseModel):
    username: str
    full_name: str


class ImageBrief(BaseModel):
    name: str
    environment: str
    version: str


class FlavourBrief(BaseModel):
    name: str
    cores: int
    memory_mb: int
    gpu_kind: str | None
    gpu_count: int


class PlanBrief(BaseModel):
    id: int
    image: ImageBrief
    flavour: FlavourBrief


class ExperimentBrief(BaseModel):
    id: int
    external_id: str
    proposal: str
    instrument: str


class Screen(BaseModel):
    width: int
    height: int


class InstanceOut(BaseModel):
    """An instance as ``visa.instances.serialize.instance_dict`` shows it (never its secret)."""

    uid: str
    name: str
    state: str
    owner: OwnerOut
    role: str | None = Field(description="The caller's member role, if any")
    plan: PlanBrief
    protocols: list[str]
    experiments: list[ExperimentBrief]
    open_data: list[ExperimentBrief] = Field(description="Asked for as open data (embargo ended): raw data, read-only")
    cloud: str
    screen: Screen
    keyboard_layout: str
    error: str | None
    created_at: datetime
    terminates_at: datetime
    seconds_left: int
    last_seen_at: datetime | None
    comments: str



class MeOut(BaseModel):
    username: str
    full_name: str
    email: str | None
    roles: list[str]
    instance_quota: int
    csrf_token: str


class PlanImageOut(BaseModel):
    name: str
    environment: str
    version: str
    description: str
    icon: str | None
    protocols: list[str]


class PlanFlavourOut(BaseModel):
    name: str
    description: str
    cores: int
    memory_mb: int
    gpu_kind: str | None
    gpu_count: int


class PlanOut(BaseModel):
    id: int
    preset: bool
    image: PlanImageOut
    flavour: PlanFlavourOut
    max_lifetime_hours: int


class PlansQuery(BaseModel):
    experiment: list[DbId] = Field(default_factory=list, description="Experiment ids the machine is for")


class ConnectOut(BaseModel):
    url: str = Field(description="Websocket URL with a one-time token")
    expires_in: int
    view_only: bool
    role: str


class ThumbnailOut(BaseModel):
    uid: str
    updated_at: datetime
    bytes: int


class TokenOut(BaseModel):
    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewTokenOut(TokenOut):
    token: str = Field(description="The secret value, shown once")


class MemberOut(BaseModel):
    username: str
    full_name: str
    role: str
    since: datetime


class SupportOut(BaseModel):
    status: str
    message: str | None = None
    member: MemberOut | None = None


class UserSearchQuery(BaseModel):
    q: str = Field("", max_length=100, description="Part of a username or full name")


class UserBrief(BaseModel):
    username: str
    full_name: str



class ExtensionInstance(BaseModel):
    uid: str
    name: str
    owner: str
    terminates_at: datetime


class ExtensionOut(BaseModel):
    id: int
    state: Literal["PENDING", "ACCEPTED", "REFUSED"]
    requested_until: datetime
    granted_until: datetime | None
    comment: str
    response: str
    created_at: datetime
    handled_at: datetime | None
    instance: ExtensionInstance | None = None


class ExtensionQuery(BaseModel):
    state: Literal["PENDING", "ACCEPTED", "REFUSED", "ALL"] = "PENDING"


KNOWN: dict[str, Doc] = {
    "auth_api.login": Doc("Log in with a local account", ("auth",), body=LoginForm, response=MeOut, auth=False),
    "auth_api.logout": Doc("Log out (ends the cookie session)", ("auth",), response=Ok, auth=False),
    "auth_api.me": Doc("Who am I", ("auth",), response=MeOut),
    "catalogue_api.plans": Doc(
        "Plans (image x flavour) the caller may pick for these experiments", ("catalogue",),
        query=PlansQuery, response=list[PlanOut],
    ),
    "experiments_api.list_experiments": Doc("The caller's experiments", ("experiments",), response=list[ExperimentOut]),
    "instances_api.list_instances": Doc(
        "The caller's instances and those shared with them", ("instances",), response=list[InstanceOut]
    ),
    "instances_api.create_instance": Doc(
        "Ask for a new instance (returns at once, in BUILDING)", ("instances",),
        body=CreateInstance, response=InstanceOut, status=201,
    ),
    "instances_api.get_instance": Doc("One instance", ("instances",), response=InstanceOut),
    "instances_api.act": Doc("Start, stop or reboot an instance", ("instances",), response=InstanceOut, status=202),
    "instances_api.delete": Doc(
        "Delete an instance (shut down first, then deleted)", ("instances",), response=InstanceOut, status=202
    ),
    "gateway_api.connect": Doc(
        "A one-time token (valid a few seconds) to open the desktop websocket", ("instances",), response=ConnectOut
    ),
    "thumbnails_api.put": Doc(
        "Upload the desktop thumbnail (raw JPEG)", ("instances",), body="image/jpeg", response=ThumbnailOut
    ),
    "thumbnails_api.get": Doc(
        "The desktop thumbnail (JPEG)", ("instances",), response="image/jpeg", extra_responses={304: "Not modified"}
    ),
    "auth_api.list_tokens": Doc("The caller's personal API tokens (never their values)", ("auth",),
                                response=list[TokenOut]),
    "auth_api.create_token": Doc(
        "Create a personal API token (from a logged-in session); its value is shown once", ("auth",),
        body=NewToken, response=NewTokenOut, status=201,
    ),
    "auth_api.revoke_token": Doc("Revoke one of the caller's tokens", ("auth",), response=TokenOut),
    "members_api.list_members": Doc("An instance's members", ("sharing",), response=list[MemberOut]),
    "members_api.add_member": Doc("Share an instance with a user", ("sharing",), body=NewMember,
                                  response=MemberOut, status=201),
    "members_api.change_role": Doc("Change a member's role", ("sharing",), body=RoleChange, response=MemberOut),
    "members_api.revoke_member": Doc("Remove a member", ("sharing",), status=204),
    "members_api.request_support": Doc(
        "Support staff ask to join an instance (joined at once, or pending the owner's approval)", ("sharing",),
        response=SupportOut, status=202, extra_responses={201: "Joined at once"},
    ),
    "members_api.pending_support": Doc("Pending support requests (owner)", ("sharing",),
                                       response=list[dict[str, Any]]),
    "members_api.answer_support": Doc("Approve or deny a support request (owner)", ("sharing",),
                                      response=SupportOut),
    "users_api.search": Doc("Find users to share with (username and full name only)", ("sharing",),
                            query=UserSearchQuery, response=list[UserBrief]),
    "extensions_api.request_extension": Doc(
        "Ask for a longer lifetime (accepted at once where the image's rule says so)", ("extensions",),
        body=RequestExtension, response=ExtensionOut, status=201,
    ),
    "extensions_api.list_extensions": Doc(
        "Extension requests to handle (admins): pending by default", ("extensions", "admin"),
        query=ExtensionQuery, response=list[ExtensionOut],
    ),
    "extensions_api.handle_extension": Doc(
        "Accept (optionally until another date) or refuse an extension request", ("extensions", "admin"),
        body=HandleExtension, response=ExtensionOut,
    ),
}

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
        d = getattr(view, "__openapi__", None) or _BY_ENDPOINT.get(rule.endpoint) or KNOWN.get(rule.endpoint)
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
                "session": {"type": "apiKey", "in": "cookie", "name": "visa_session"},
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
<html lang="en"><head><meta charset="utf-8"><title>visa API</title>
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
def document_json():  # noqa: ANN201
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    cached = app.extensions.get("openapi_document")
    if cached is None:
        cached = app.extensions["openapi_document"] = build_document(app)
    return jsonify(cached)


@bp.get("/api/docs")
@doc("Browsable documentation (HTML)", tags=["meta"], response="text/html", auth=False)
def docs_page():  # noqa: ANN201
    import os

    static = current_app.static_folder or ""
    vendored = os.path.exists(os.path.join(static, "vendor", "swagger-ui", "swagger-ui-bundle.js"))
    return render_template_string(_DOCS_PAGE, vendored=vendored)


def parse_query(model: type[Q]) -> Q:
    """The query string validated by ``model``; lists take repeated keys, unknown keys are ignored."""
    from flask import request

    data: dict[str, Any] = {}
    for name, info in model.model_fields.items():
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
