"""Keycloak (or any OIDC server with Keycloak's URL layout): the login flow and bearer tokens.

- Login: authorization code flow with PKCE (S256), ``state`` and ``nonce``; the ID token is
  validated like any token (signature, issuer, audience = client id, expiry, nonce).
- Bearer: an access token that is a JWT signed by one of the realm's keys (JWKS, cached,
  fetched again when an unknown key id appears, at most every 30 s), from the realm's
  issuer, for our audience (``OidcSettings.audience``, default the client id), not expired.
  With Keycloak, add an audience mapper to the client so its access tokens name it.
- Users are found by the token's issuer and subject, never by name, and created on first
  login (see ``user_from_claims`` for a name already taken). Roles come from the
  database, plus, when ``OidcSettings.role_claim`` is set, the token's roles that
  ``role_mapping`` maps to a visa role (unmapped token roles never count).

Token times are checked against the wall clock (they come from the identity provider's
clock), not the service clock.

Two addresses of the provider (``OidcSettings``): the back channel ``server_url``, where visa's
processes fetch discovery, tokens, keys and user info, and the front channel ``browser_url``
(default ``server_url``), where browsers are sent to log in and out, and which names the realm
in tokens (the issuer). Inside Compose or a split-horizon network the two differ.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from jwcrypto import jwk, jws
from jwcrypto.common import JWException
from keycloak import KeycloakOpenID
from keycloak.exceptions import KeycloakError
from sqlalchemy import select
from sqlalchemy.orm import Session

from visa.actor import SYSTEM, Actor
from visa.auth.login import Limits, audit_failure, record_login
from visa.auth.logsafe import clip
from visa.clock import Clock
from visa.errors import Unauthorized, VisaError
from visa.policy import MINT_TOKENS
from visa.settings import OidcSettings
from visa.users.models import Role, User
from visa.users.service import Posix, create_user, reserved_usernames, set_posix, validate_username

log = logging.getLogger(__name__)

ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
LEEWAY = 30  # seconds of clock skew tolerated on exp/nbf/iat
MAX_TOKEN_BYTES = 16_384
JWKS_TTL = 600.0
JWKS_MIN_REFETCH = 30.0


class TokenError(Unauthorized):
    """A token that is not acceptable (its reason is logged, the client sees a short one)."""


@dataclass(frozen=True)
class LoginStart:
    url: str
    state: str
    nonce: str
    verifier: str


class OidcClient:
    """One realm: discovery, the code flow, refresh, logout and token validation."""

    def __init__(self, settings: OidcSettings, timeout: int = 10) -> None:
        if not settings.server_url:
            raise ValueError("no identity provider configured")
        self.settings = settings
        self.server_url = settings.server_url.rstrip("/") + "/"
        self.browser_url = settings.frontchannel_base
        self.issuer = settings.issuer
        self.audience = settings.audience or settings.client_id
        self.keycloak = KeycloakOpenID(
            server_url=self.server_url, realm_name=settings.realm, client_id=settings.client_id,
            client_secret_key=settings.client_secret, verify=settings.verify_tls, timeout=timeout,
        )
        self._lock = threading.Lock()
        self._discovery: dict[str, Any] | None = None
        self._keys: jwk.JWKSet | None = None
        self._keys_at = 0.0

    # --- discovery and keys ---------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            self._discovery = self.keycloak.well_known()
        return self._discovery

    def _keyset(self, refresh: bool = False) -> jwk.JWKSet:
        with self._lock:
            age = time.monotonic() - self._keys_at
            if self._keys is None or age > JWKS_TTL or (refresh and age > JWKS_MIN_REFETCH):
                try:
                    self._keys = jwk.JWKSet.from_json(json.dumps(self.keycloak.certs()))
                    self._keys_at = time.monotonic()
                except (KeycloakError, OSError, ValueError, JWException) as exc:
                    if self._keys is None:
                        raise TokenError("the identity provider's keys are unavailable") from exc
                    log.warning("JWKS refresh failed, keeping the cached keys: %s", clip(str(exc), 200))
            return self._keys

    # --- tokens -----------------------------------------------------------------------
    def validate(self, token: str, *, audience: str | None = None, nonce: str | None = None) -> dict[str, Any]:
        """The claims of a JWT signed by the realm for ``audience``; raise TokenError otherwise."""
        if not token or len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise TokenError("invalid token")
        signed = jws.JWS()
        try:
            signed.deserialize(token)
            alg = signed.jose_header.get("alg")
        except (JWException, ValueError) as exc:
            raise TokenError("invalid token") from exc
        if alg not in ALGORITHMS:
            raise TokenError("invalid token")
        signed.allowed_algs = sorted(ALGORITHMS)
        for refresh in (False, True):
            try:
                signed.verify(self._keyset(refresh=refresh))
                break
            except JWException as exc:
                # An unknown key id may be a key the realm rotated in: fetch the keys again once.
                if refresh or "not in key set" not in str(exc) and "No working key" not in str(exc):
                    log.info("token refused: bad signature (%s)", clip(str(exc), 120))
                    raise TokenError("invalid token") from exc
        try:
            claims = json.loads(signed.payload)
        except ValueError as exc:
            raise TokenError("invalid token") from exc
        if not isinstance(claims, dict):
            raise TokenError("invalid token")
        self._check_claims(claims, audience or self.audience, nonce)
        if nonce is None and not _is_access_token(signed.jose_header, claims):
            raise TokenError("not an access token")
        return claims

    def _check_claims(self, claims: dict[str, Any], audience: str, nonce: str | None) -> None:
        now = time.time()
        if claims.get("iss") != self.issuer:
            raise TokenError("token from another issuer")
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if audience not in auds:
            raise TokenError("token for another audience")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp + LEEWAY < now:
            raise TokenError("token expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf - LEEWAY > now:
            raise TokenError("token not valid yet")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise TokenError("token without subject")
        if nonce is not None and not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise TokenError("ID token for another login (nonce)")

    # --- the code flow --------------------------------------------------------------------
    def start_login(self, redirect_uri: str, scope: str = "openid profile email") -> LoginStart:
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(64)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = urlencode({
            "client_id": self.settings.client_id, "response_type": "code", "redirect_uri": redirect_uri,
            "scope": scope, "state": state, "nonce": nonce,
            "code_challenge": challenge, "code_challenge_method": "S256",
        })
        return LoginStart(f"{self._front(self.discovery()['authorization_endpoint'])}?{query}", state, nonce, verifier)

    def exchange_code(self, code: str, redirect_uri: str, verifier: str) -> dict[str, Any]:
        try:
            return self.keycloak.token(
                grant_type="authorization_code", code=code, redirect_uri=redirect_uri, code_verifier=verifier,
            )
        except KeycloakError as exc:
            log.info("code exchange refused: %s", clip(str(exc), 200))
            raise Unauthorized("the identity provider refused the login: please try again") from exc

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        """New tokens; Unauthorized when the provider ended the session (OSError: unreachable)."""
        try:
            return self.keycloak.refresh_token(refresh_token)
        except KeycloakError as exc:
            if getattr(exc, "response_code", None) in (None, 500, 502, 503, 504):
                raise OSError(f"identity provider unavailable: {clip(str(exc), 120)}") from exc
            raise Unauthorized("your identity provider session has ended: log in again") from exc

    def end_session(self, refresh_token: str) -> bool:
        """End the provider's session (Keycloak back-channel logout). False if it could not."""
        try:
            self.keycloak.logout(refresh_token)
            return True
        except (KeycloakError, OSError, TypeError) as exc:
            log.warning("identity provider logout failed: %s", clip(str(exc), 200))
            return False

    def end_session_url(self, post_logout_redirect_uri: str) -> str | None:
        """Where the browser goes to end the provider's own cookie session, then comes back."""
        try:
            endpoint = self.discovery().get("end_session_endpoint")
        except (KeycloakError, OSError):
            return None
        if not endpoint:
            return None
        query = urlencode({"client_id": self.settings.client_id, "post_logout_redirect_uri": post_logout_redirect_uri})
        return f"{self._front(endpoint)}?{query}"

    def _front(self, endpoint: str) -> str:
        """An endpoint of the discovery document (fetched on the back channel) as browsers reach
        it: a provider that answers with its back-channel address has it moved to the front one."""
        if endpoint.startswith(self.server_url):
            return self.browser_url + endpoint[len(self.server_url):]
        return endpoint


def _is_access_token(header: dict[str, Any], claims: dict[str, Any]) -> bool:
    """Access tokens say so: ``typ: at+jwt`` in the header (RFC 9068) or Keycloak's ``typ: Bearer``
    claim. An ID token also names our client as audience, and must not open the API."""
    typ = str(header.get("typ", "")).lower()
    return typ in {"at+jwt", "application/at+jwt"} or claims.get("typ") == "Bearer"


_clients: dict[tuple[str, str, str, str, str | None], OidcClient] = {}
_clients_lock = threading.Lock()


def client_for(settings: OidcSettings) -> OidcClient:
    """One client (and so one JWKS cache) per configured realm and process."""
    key = (settings.server_url or "", settings.browser_url or "", settings.realm, settings.client_id,
           settings.audience)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = OidcClient(settings)
        return _clients[key]


# --- users and roles from claims ------------------------------------------------------------
def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def roles_from_claims(claims: dict[str, Any], settings: OidcSettings) -> frozenset[Role]:
    """The visa roles that the token's roles map to (only explicitly mapped ones)."""
    if not settings.role_claim:
        return frozenset()
    raw = _claim(claims, settings.role_claim)
    names = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
    roles: set[Role] = set()
    for name in names[:200]:
        target = settings.role_mapping.get(str(name))
        if target is None:
            continue
        try:
            roles.add(Role(target.upper()))
        except ValueError:
            log.warning("role_mapping maps %s to an unknown role %s", clip(name), clip(target))
    return frozenset(roles)


def _number(value: Any) -> int | None:
    """A number claim (LDAP attributes often come as strings, or one-element lists)."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 10:
        return int(value.strip())
    return None


def posix_from_claims(claims: dict[str, Any], settings: OidcSettings) -> Posix | None:
    """The unix identity in the token, from the claims the settings name; None when it has none."""
    uid = _number(_claim(claims, settings.uid_claim)) if settings.uid_claim else None
    gid = _number(_claim(claims, settings.gid_claim)) if settings.gid_claim else None
    groups: list[int] = []
    if settings.groups_claim:
        raw = _claim(claims, settings.groups_claim)
        items = raw.replace(",", " ").split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
        groups = [n for n in (_number(i) for i in items[:200]) if n is not None]
    home = _claim(claims, settings.home_claim) if settings.home_claim else None
    home = home if isinstance(home, str) and home else None
    posix = Posix(uid, gid, tuple(groups), home)
    return None if uid is None or posix.is_empty() else posix


def _apply_posix(session: Session, clock: Clock, user: User, claims: dict[str, Any], settings: Any) -> None:
    posix = posix_from_claims(claims, settings.oidc)
    if posix is None:
        return
    if "oidc" not in settings.posix.sources:
        log.warning("unix identity of %s from the provider not taken: posix.sources does not name oidc",
                    user.username)
        return
    try:
        set_posix(SYSTEM, session, clock, user, posix, source="oidc", limits=settings.posix)
    except VisaError as exc:
        # The login goes on with the identity as it was: a machine that needs the uid is refused
        # at create time, naming what is missing, and the log says why the claim was not taken.
        log.warning("unix identity of %s from the provider not taken: %s", user.username, clip(exc.message, 200))


def user_from_claims(
    session: Session, clock: Clock, claims: dict[str, Any], default_quota: int = 2, *, settings: Any = None
) -> User:
    """The account of a validated token's identity (issuer and subject), created on first login.

    Never found by name: a first login whose ``preferred_username`` is already taken (a local
    account, an imported one, or another provider's) gets an account of its own, named with a
    suffix (``alice-2``); an administrator links an existing account explicitly
    (``visa users link``)."""
    issuer = str(claims.get("iss") or "")[:255]
    sub = str(claims["sub"])[:255]
    if not issuer:
        raise Unauthorized("token without issuer")
    full_name = str(claims.get("name") or "")[:200]
    email = claims.get("email") if isinstance(claims.get("email"), str) and len(claims["email"]) <= 254 else None
    user = session.scalar(select(User).where(User.identity_issuer == issuer, User.external_id == sub))
    if user is None:
        # Linked before issuers were recorded (one provider was configured): that subject's account.
        user = session.scalar(select(User).where(User.identity_issuer.is_(None), User.external_id == sub))
        if user is not None:
            user.identity_issuer = issuer
    if user is None:
        wanted = str(claims.get("preferred_username") or "").lower()
        try:
            validate_username(wanted)
        except Exception as exc:
            raise Unauthorized(f"your account name {clip(wanted, 40)!r} cannot be used here") from exc
        reserved = reserved_usernames(settings.provisioning.probe_username if settings is not None else "visa")
        if wanted in reserved:
            raise Unauthorized(f"your account name {wanted!r} is reserved here (a system account's): "
                               "ask the facility for another")
        username = _free_username(session, wanted)
        if username != wanted:
            log.warning("first login of %s at %s: the name %s is taken, the new account is %s",
                        clip(sub), clip(issuer), clip(wanted), clip(username))
        user = create_user(
            SYSTEM, session, clock, username=username, full_name=full_name,
            email=email if email and "@" in email else None, external_id=sub, default_quota=default_quota,
            reserved=reserved,
        )
        user.identity_issuer = issuer
    if not user.active:
        raise Unauthorized("this account is disabled")
    if full_name and user.full_name != full_name:
        user.full_name = full_name
    if email and "@" in email and user.email != email:
        user.email = email
    if settings is not None:
        _apply_posix(session, clock, user, claims, settings)
    return user


def _free_username(session: Session, wanted: str) -> str:
    """``wanted``, or the first of ``wanted-2``, ``wanted-3``... that no account has."""
    if session.scalar(select(User.id).where(User.username == wanted)) is None:
        return wanted
    for n in range(2, 1000):
        suffix = f"-{n}"
        candidate = wanted[: 32 - len(suffix)] + suffix
        if session.scalar(select(User.id).where(User.username == candidate)) is None:
            return candidate
    raise Unauthorized("no free account name for you: contact support")


def actor_from_access_token(session: Session, services: Any, value: str, ip: str | None = None) -> Actor:
    """The actor of a bearer access token issued by the configured realm."""
    settings = services.settings
    claims = client_for(settings.oidc).validate(value)
    user = user_from_claims(session, services.clock, claims, settings.default_quota, settings=settings)
    now = services.clock.now()
    roles = frozenset(user.roles_at(now)) | roles_from_claims(claims, settings.oidc)
    granted = claims.get("scope")
    scopes = set(granted.split()[:100]) if isinstance(granted, str) else set()
    idp_scopes = frozenset({MINT_TOKENS}) if settings.oidc.token_scope in scopes else frozenset()
    return Actor(user=user, roles=roles, name=user.username, ip=ip, scopes=None, credential="oidc_token",
                 idp_scopes=idp_scopes, at=now)


FLOW_SECONDS = 600  # a login started at the provider must come back within this


class LoginIncomplete(Unauthorized):
    """The provider's answer does not belong to a login this browser started (or it came too late)."""


@dataclass(frozen=True)
class OidcLogin:
    user: User
    roles: frozenset[Role]
    refresh_token: str | None
    expires_in: Any
    next: str


def roles_in_tokens(client: Any, tokens: dict[str, Any], settings: OidcSettings,
                    fallback: dict[str, Any] | None = None) -> frozenset[Role]:
    """The visa roles in a token response: Keycloak puts realm roles in the access token."""
    if not settings.role_claim:
        return frozenset()
    try:
        claims = client.validate(str(tokens.get("access_token", "")))
    except Unauthorized:
        if fallback is None:
            log.warning("refreshed access token not readable: the provider's roles are dropped")
            return frozenset()
        claims = fallback
    return roles_from_claims(claims, settings)


def complete_login(session: Session, services: Any, limits: Limits, flow: Any, answer: dict[str, str],
                   redirect_uri: str, ip: str | None) -> OidcLogin:
    """The user the provider's answer (``error``, ``state``, ``code``) names, for the login ``flow`` this
    browser started. Refusals are audited and count against the address: RateLimited before anything is
    looked at, LoginIncomplete for an answer that is not ours, and Unauthorized or InvalidInput (whose
    message the user may see) or another VisaError when the provider or the claims fail."""
    settings = services.settings
    limits.login_ip.check(ip, "failed logins from your address")
    error, state, code = answer.get("error"), answer.get("state", ""), answer.get("code", "")
    reason = None
    if error:
        reason = f"provider error {clip(error, 40)}"
    elif not isinstance(flow, dict) or time.time() - float(flow.get("at", 0)) > FLOW_SECONDS:
        reason = "no login in progress (or it expired)"
    elif not hmac.compare_digest(str(flow.get("state", "")), state) or not code or len(code) > 2048:
        reason = "state mismatch"
    if reason:
        limits.login_ip.hit(ip)
        audit_failure(services, "login.failure", "(oidc)", ip, reason, method="oidc")
        raise LoginIncomplete(reason)
    assert isinstance(flow, dict)
    client = client_for(settings.oidc)
    try:
        tokens = client.exchange_code(code, redirect_uri, flow["verifier"])
        claims = client.validate(str(tokens.get("id_token", "")), audience=settings.oidc.client_id, nonce=flow["nonce"])
        user = user_from_claims(session, services.clock, claims, settings.default_quota, settings=settings)
    except VisaError as exc:
        limits.login_ip.hit(ip)
        audit_failure(services, "login.failure", "(oidc)", ip, clip(exc.message, 120), method="oidc")
        raise
    # Roles in the access token (Keycloak puts realm roles there), else in the ID token.
    roles = roles_in_tokens(client, tokens, settings.oidc, fallback=claims)
    record_login(session, services, user, ip, "oidc")
    return OidcLogin(user=user, roles=roles, refresh_token=str(tokens.get("refresh_token") or "") or None,
                     expires_in=tokens.get("expires_in", 300), next=flow.get("next") or "/")
