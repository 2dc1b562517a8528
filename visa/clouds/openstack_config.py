"""The settings of an OpenStack cloud (a ``clouds`` row's ``config``), typed and checked.

Two ways to say how to reach the cloud, as openstacksdk understands them:

* ``cloud``: an entry of a ``clouds.yaml`` by name (from ``clouds_yaml``, else openstacksdk's
  usual places: ``~/.config/openstack/``, ``/etc/openstack/``); any key below overrides the entry's;
* or the keys themselves: ``auth_type`` (``password``, the default, ``v3applicationcredential``
  or ``token``) with that type's credentials, flat or under ``auth`` as in a ``clouds.yaml``.

With either: ``region_name``, ``interface`` (``public``, ``internal``, ``admin``), ``cacert`` (a
CA bundle) and ``verify``. Then visa's own keys (:class:`OpenStackConfig`). Secrets may be
``{"env": "VAR"}``, read from visa's environment when the provider is made. An unknown key is
refused, named.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from visa.errors import InvalidInput

AuthType = Literal["password", "v3applicationcredential", "token"]


def _secret(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str) and value["env"]:
        return value
    raise ValueError('a string, or {"env": "VARIABLE"} to read it from visa\'s environment')


Secret = Annotated[str | dict[str, str], BeforeValidator(_secret)]

# The credentials each type of authentication takes (beyond auth_url); keys of another type are refused.
USER = ("username", "user_id", "user_domain_name", "user_domain_id")
PROJECT = ("project_name", "project_id", "project_domain_name", "project_domain_id")
AUTH_KEYS: dict[str, tuple[str, ...]] = {
    "password": (*USER, "password", *PROJECT),
    "v3applicationcredential": (
        *USER, "application_credential_id", "application_credential_name", "application_credential_secret"),
    "token": ("token", *PROJECT),
}
CREDENTIALS = frozenset(k for keys in AUTH_KEYS.values() for k in keys)


class AuthFields(BaseModel):
    """What openstacksdk passes to Keystone (a ``clouds.yaml`` entry's ``auth``)."""

    model_config = ConfigDict(extra="forbid")

    auth_url: str | None = Field(None, description="Keystone's URL, e.g. https://keystone.example.org:5000/v3")
    username: str | None = None
    user_id: str | None = None
    user_domain_name: str | None = None
    user_domain_id: str | None = None
    password: Secret | None = None
    project_name: str | None = None
    project_id: str | None = None
    project_domain_name: str | None = None
    project_domain_id: str | None = None
    application_credential_id: str | None = None
    application_credential_name: str | None = None
    application_credential_secret: Secret | None = None
    token: Secret | None = None


class ConnectionConfig(AuthFields):
    """How to reach the cloud: a ``clouds.yaml`` entry, or the credentials themselves."""

    cloud: str | None = Field(None, description="Name of a clouds.yaml entry")
    clouds_yaml: str | None = Field(None, description="The clouds.yaml file (default: openstacksdk's usual places)")
    auth_type: AuthType | None = Field(None, description="Default password (or the clouds.yaml entry's)")
    auth: AuthFields | None = Field(None, description="The credentials as a clouds.yaml entry nests them")
    region_name: str | None = None
    interface: Literal["public", "internal", "admin"] | None = None
    cacert: str | None = Field(None, description="CA bundle the cloud's certificates are checked with")
    verify: bool | None = Field(None, description="Check TLS certificates (default true)")

    def credentials(self) -> dict[str, Any]:
        """The auth keys given, flat or under ``auth``, as one mapping (unset ones left out)."""
        flat = self.model_dump(include=set(AuthFields.model_fields), exclude_none=True)
        nested = self.auth.model_dump(exclude_none=True) if self.auth else {}
        return {**flat, **nested}


class OpenStackConfig(ConnectionConfig):
    """A cloud's whole ``config``: how to reach it, and what visa does there."""

    network: str | None = Field(None, description="Name or id of the servers' network; auto (default) or none")
    security_groups: list[str] = Field(default_factory=list, description="Given to every server")
    name_prefix: str = Field("", max_length=64, description="Prepended to server names")
    timeout: float = Field(30, gt=0, le=600, description="Seconds per HTTP request")
    page_size: int = Field(0, ge=0, description="Servers per list page (0: the cloud's own)")
    reboot_type: Literal["SOFT", "HARD"] = "SOFT"
    placement: ConnectionConfig | None = Field(
        None, description="Credentials for reading Placement, as the keys that differ from the cloud's")
    provisioning: dict[str, Any] | None = Field(None, description="This cloud's [provisioning] overrides")
    # Read by no one since retries became the caller's (one deadline per call); kept so that
    # configurations written before still load.
    retries: int | None = Field(None, description="Ignored (see the scheduler's cloud_call_seconds)")
    backoff: float | None = Field(None, description="Ignored (see the scheduler's cloud_call_seconds)")

    def placement_connection(self) -> ConnectionConfig:
        """The connection Placement is read with: the cloud's, with ``placement``'s keys over it.
        Credentials of another type than the override's are dropped (a service account's password
        over visa's application credential)."""
        base = self.model_dump(include=set(ConnectionConfig.model_fields), exclude_none=True)
        if self.placement is None:
            return ConnectionConfig.model_validate(base)
        over = self.placement.model_dump(exclude_none=True)
        if over.get("auth_type", self.auth_type) != self.auth_type or over.get("cloud"):
            base = {k: v for k, v in base.items() if k not in CREDENTIALS and k not in ("auth", "auth_type")}
        creds = {**ConnectionConfig.model_validate(base).credentials(), **self.placement.credentials()}
        merged = {k: v for k, v in {**base, **over}.items() if k not in CREDENTIALS and k != "auth"}
        return ConnectionConfig.model_validate({**merged, **creds})


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(["config", *(str(p) for p in loc)])


def check_connection(conn: ConnectionConfig, prefix: str = "config") -> None:
    """The credentials must be whole for their type; keys of another type are refused (a typo in
    ``auth_type`` would otherwise be a 401 much later)."""
    flat = set(conn.model_dump(include=set(AuthFields.model_fields), exclude_none=True))
    nested = set(conn.auth.model_dump(exclude_none=True)) if conn.auth else set()
    for key in sorted(flat & nested):
        raise InvalidInput(f"{prefix}.{key}: given twice (also under auth)", field=f"{prefix}.{key}")
    creds = conn.credentials()
    if conn.cloud:  # the entry supplies the rest
        if conn.auth_type is not None:
            _check_type_keys(conn.auth_type, creds, prefix)
        return
    if conn.clouds_yaml:
        raise InvalidInput(f"{prefix}.cloud: name the clouds.yaml entry to use", field=f"{prefix}.cloud")
    if not creds.get("auth_url"):
        raise InvalidInput(f"{prefix}.auth_url: required (Keystone's URL), or name a clouds.yaml entry "
                           "with cloud", field=f"{prefix}.auth_url")
    auth_type = conn.auth_type or "password"
    _check_type_keys(auth_type, creds, prefix)

    def need(*alternatives: str, why: str = "") -> None:
        if not any(creds.get(k) for k in alternatives):
            field = f"{prefix}.{alternatives[0]}"
            others = f" (or {', '.join(alternatives[1:])})" if alternatives[1:] else ""
            raise InvalidInput(f"{field}: required for auth_type {auth_type}{why}{others}", field=field)

    if auth_type == "password":
        need("username", "user_id")
        need("password")
        need("project_name", "project_id")
    elif auth_type == "token":
        need("token")
        need("project_name", "project_id")
    else:
        need("application_credential_secret")
        if not creds.get("application_credential_id"):
            need("application_credential_id", "application_credential_name")
            need("username", "user_id", why=" with application_credential_name")


def _check_type_keys(auth_type: str, creds: dict[str, Any], prefix: str) -> None:
    allowed = set(AUTH_KEYS[auth_type]) | {"auth_url"}
    for key in sorted(creds):
        if key not in allowed:
            raise InvalidInput(f"{prefix}.{key}: not used with auth_type {auth_type}", field=f"{prefix}.{key}")


def parse_config(config: dict[str, Any]) -> OpenStackConfig:
    """A cloud's ``config`` as :class:`OpenStackConfig`; :class:`InvalidInput` naming the first bad key."""
    try:
        parsed = OpenStackConfig.model_validate(config)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _where(tuple(first["loc"]))
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise InvalidInput(f"{where}: {message}", field=where) from None
    check_connection(parsed)
    if parsed.placement is not None:
        try:
            check_connection(parsed.placement_connection(), "config.placement")
        except ValidationError as exc:  # the merge of valid parts is valid; said clearly all the same
            raise InvalidInput(f"config.placement: {exc.errors()[0]['msg']}", field="config.placement") from None
    return parsed
