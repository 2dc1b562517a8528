"""Any OpenID Connect provider, by its discovery document: the login flow and bearer tokens.

- The provider: ``OidcSettings.issuer`` (discovery at ``<issuer>/.well-known/openid-configuration``),
  or Keycloak's shorthand, ``server_url`` and ``realm`` (the issuer ``<server>/realms/<realm>``).
  The endpoints, keys (JWKS), end-session and refresh all come from discovery.
- Login: authorization code flow with PKCE (S256), ``state`` and ``nonce``; the ID token is
  checked like any token (signature, issuer, audience = client id, expiry, nonce, ``azp``).
- Bearer: an access token that is a JWT signed by one of the provider's keys (JWKS, cached,
  fetched again when a token names a key id it lacks, at most every ``JWKS_MIN_REFETCH``
  seconds: a rotated key needs no restart), from the issuer, for our audience
  (``OidcSettings.audience``, default the client id), not expired. With Keycloak, add an
  audience mapper to the client so its access tokens name it.
- The signatures and claims are checked by joserfc and Authlib's claim classes, not by hand.
- Users are found by the token's issuer and subject, never by name, and created on first
  login (see ``user_from_claims`` for a name already taken). Roles come from the
  database, plus, when ``OidcSettings.role_claim`` is set, the values of that claim that
  ``role_mapping`` maps to a visa role (values no entry maps never count).

Token times are checked against the wall clock (they come from the identity provider's
clock), not the service clock.

With Keycloak's shorthand, the provider has two addresses: the back channel ``server_url``,
where visa's processes fetch discovery, tokens and keys, and the front channel ``browser_url``
(default ``server_url``), where browsers are sent to log in and out, and which names the realm
in tokens (the issuer). Inside Compose or a split-horizon network the two differ. Logging out
also ends the Keycloak session by its back-channel form; with another provider, the refresh
token is revoked (RFC 7009) when discovery names a revocation endpoint.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from authlib.oauth2.claims import JWTClaims
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jws, jwt
from joserfc.errors import ClaimError, ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet, import_key
from sqlalchemy import select
from sqlalchemy.orm import Session

from visa.actor import SYSTEM, Actor
from visa.auth.login import Limits, audit_failure, record_login
from visa.auth.logsafe import clip
from visa.clock import Clock
from visa.errors import Unauthorized, VisaError
from visa.policy import MINT_TOKENS
from visa.settings import OidcSettings
from visa.users.groups import sync_claimed_groups
from visa.users.models import Role, User
from visa.users.service import Posix, create_user, reserved_usernames, set_posix, validate_username

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519")
LEEWAY = 30  # seconds of clock skew tolerated on exp/nbf/iat
MAX_TOKEN_BYTES = 16_384
MAX_DOCUMENT_BYTES = 1_000_000  # a discovery document or key set larger than this is refused
DISCOVERY_TTL = 3600.0
JWKS_TTL = 600.0
JWKS_MIN_REFETCH = 30.0  # a token naming an unknown key id fetches the keys again at most this often
# The claim checks' names, as the logs and the client see them.
CLAIM_REASONS = {
    "iss": "token from another issuer", "aud": "token for another audience", "exp": "token expired",
    "nbf": "token not valid yet", "sub": "token without subject", "nonce": "ID token for another login (nonce)",
}


class TokenError(Unauthorized):
    """A token that is not acceptable (its reason is logged, the client sees a short one)."""


class DiscoveryError(OSError):
    """The provider's discovery document (or key set) could not be read or is not usable."""


@dataclass(frozen=True)
class LoginStart:
    url: str
    state: str
    nonce: str
    verifier: str


class OidcClient:
    """One provider: discovery, the code flow, refresh, logout and token validation."""

    def __init__(self, settings: OidcSettings, timeout: float = 10.0) -> None:
        if not settings.enabled:
            raise ValueError("no identity provider configured")
        self.settings = settings
        self.audience = settings.audience or settings.client_id
        self.timeout = timeout
        # Keycloak's shorthand: endpoints on the front-channel address are reached on the back channel.
        self.server_url = (settings.server_url or "").rstrip("/") + "/" if settings.keycloak else ""
        self.browser_url = settings.frontchannel_base if settings.keycloak else ""
        self._lock = threading.Lock()
        self._discovery: dict[str, Any] | None = None
        self._discovery_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0
        self._refetched_at = float("-inf")

    # --- discovery and keys ---------------------------------------------------------
    def _get_json(self, url: str, what: str) -> Any:
        try:
            with httpx.Client(verify=self.settings.verify_tls, timeout=self.timeout) as http:
                r = http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise DiscoveryError(f"{what} at {url} is unreachable: {clip(str(exc) or type(exc).__name__, 160)}") from exc
        if r.status_code != 200:
            raise DiscoveryError(f"{what} at {url} answered HTTP {r.status_code}")
        if len(r.content) > MAX_DOCUMENT_BYTES:
            raise DiscoveryError(f"{what} at {url} is larger than {MAX_DOCUMENT_BYTES} bytes")
        try:
            return r.json()
        except ValueError as exc:
            raise DiscoveryError(f"{what} at {url} is not JSON "
                                 f"({clip(r.headers.get('content-type', 'no content type'), 60)})") from exc

    def discovery(self) -> dict[str, Any]:
        """The provider's discovery document (cached; fetched again hourly, the old one kept on failure)."""
        with self._lock:
            fresh = self._discovery is not None and time.monotonic() - self._discovery_at < DISCOVERY_TTL
            if fresh:
                assert self._discovery is not None
                return self._discovery
            try:
                self._discovery = self._checked_discovery()
                self._discovery_at = time.monotonic()
            except DiscoveryError as exc:
                if self._discovery is None:
                    raise
                log.warning("discovery refresh failed, keeping the cached document: %s", clip(str(exc), 200))
            return self._discovery

    def _checked_discovery(self) -> dict[str, Any]:
        url = self.settings.discovery_url
        doc = self._get_json(url, "the identity provider's discovery document")
        if not isinstance(doc, dict):
            raise DiscoveryError(f"the discovery document at {url} is not a JSON object")
        issuer = doc.get("issuer")
        if not isinstance(issuer, str):
            raise DiscoveryError(f"the discovery document at {url} names no issuer")
        # The document must name the issuer it was fetched for (OpenID Connect Discovery 4.3): a
        # provider that names another would have its tokens taken for this one's. Keycloak's
        # shorthand is exempt: fetched on the back channel, it may name that address.
        if self.settings.issuer and issuer.rstrip("/") != self.settings.issuer.rstrip("/"):
            raise DiscoveryError(f"the discovery document at {url} names the issuer {clip(issuer, 120)}, "
                                 f"not {self.settings.issuer}")
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = doc.get(name)
            if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
                raise DiscoveryError(f"the discovery document at {url} has no {name}")
        return doc

    @property
    def issuer(self) -> str:
        """The ``iss`` tokens must carry: the discovery document's (the configured issuer's exact
        spelling), or with Keycloak's shorthand the realm at the browser-facing address."""
        if self.settings.issuer:
            return str(self.discovery()["issuer"])
        return self.settings.issuer_url

    def fetch_keys(self) -> KeySet:
        url = self._back(self.discovery()["jwks_uri"])
        doc = self._get_json(url, "the identity provider's key set")
        entries = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            raise DiscoveryError(f"the key set at {url} has no keys")
        keys = []
        for entry in entries[:100]:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue  # encryption keys, or nothing
            try:
                keys.append(import_key(entry))  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError) as exc:
                log.info("key %s of the identity provider skipped: %s", clip(str(entry.get("kid"))), clip(str(exc), 120))
        if not keys:
            raise DiscoveryError(f"the key set at {url} has no signing key visa can use")
        return KeySet(keys)

    def _keyset(self, refresh: bool = False) -> KeySet:
        """The provider's keys: cached for JWKS_TTL; ``refresh`` (a token names an unknown key id)
        fetches them again at once, then at most once per JWKS_MIN_REFETCH seconds, so that a
        rotated key is taken up by its first token and a stream of made-up key ids costs the
        provider one request per period."""
        with self._lock:
            now = time.monotonic()
            stale = self._keys is None or now - self._keys_at > JWKS_TTL
            if refresh and not stale and now - self._refetched_at > JWKS_MIN_REFETCH:
                stale, self._refetched_at = True, now
        if stale:
            try:
                keys = self.fetch_keys()
            except DiscoveryError as exc:
                if self._keys is None:
                    raise TokenError("the identity provider's keys are unavailable") from exc
                log.warning("JWKS refresh failed, keeping the cached keys: %s", clip(str(exc), 200))
            else:
                with self._lock:
                    self._keys, self._keys_at = keys, time.monotonic()
        assert self._keys is not None
        return self._keys

    # --- tokens -----------------------------------------------------------------------
    def validate(self, token: str, *, audience: str | None = None, nonce: str | None = None,
                 access_token: str | None = None) -> dict[str, Any]:
        """The claims of a JWT the provider signed for ``audience``; raise TokenError otherwise.
        With ``nonce``, an ID token of the login that sent it (``access_token``: its companion,
        which the ID token's ``at_hash`` names)."""
        if not token or len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise TokenError("invalid token")
        try:
            unverified = json.loads(jws.extract_compact(token.encode()).payload)
        except (JoseError, ValueError, TypeError) as exc:
            raise TokenError("invalid token") from exc
        # Another issuer's token is refused before any key is looked up: it must not make visa
        # fetch this provider's keys.
        issuer = self._issuer_or_unauthorized()
        if not isinstance(unverified, dict) or unverified.get("iss") != issuer:
            log.info("token refused: from another issuer (%s)", clip(str(unverified.get("iss")
                                                                        if isinstance(unverified, dict) else None)))
            raise TokenError("token from another issuer")
        registry = jws.JWSRegistry(algorithms=list(ALGORITHMS), strict_check_header=False)
        for refresh in (False, True):
            try:
                decoded = jwt.decode(token, self._keyset(refresh=refresh), registry=registry)
                break
            except InvalidKeyIdError as exc:
                # A key id we lack may be a key the provider rotated in: fetch the keys again (once).
                if refresh:
                    log.info("token refused: no key %s", clip(str(exc), 120))
                    raise TokenError("invalid token") from exc
            except (JoseError, ValueError, TypeError) as exc:
                log.info("token refused: bad signature or format (%s)", clip(str(exc) or type(exc).__name__, 120))
                raise TokenError("invalid token") from exc
        claims, header = decoded.claims, decoded.header
        wanted = {"iss": {"essential": True, "value": issuer},
                  "aud": {"essential": True, "value": audience or self.audience},
                  "exp": {"essential": True}, "sub": {"essential": True}}
        checked: JWTClaims
        if nonce is not None:
            checked = CodeIDToken(claims, header, wanted, {"nonce": nonce, "client_id": audience or self.audience,
                                                           "access_token": access_token})
        else:
            checked = JWTClaims(claims, header, wanted)
        try:
            checked.validate(leeway=LEEWAY)
        except ExpiredTokenError as exc:
            raise TokenError("token expired") from exc
        except ClaimError as exc:
            reason = CLAIM_REASONS.get(exc.claim, f"invalid token ({clip(exc.claim, 20)})")
            log.info("token refused: %s", reason)
            raise TokenError(reason) from exc
        except JoseError as exc:
            raise TokenError("invalid token") from exc
        if nonce is None and not _is_access_token(header, claims):
            raise TokenError("not an access token")
        return dict(claims)

    def _issuer_or_unauthorized(self) -> str:
        try:
            return self.issuer
        except DiscoveryError as exc:
            log.warning("token not checked: %s", clip(str(exc), 200))
            raise TokenError("the identity provider is unavailable") from exc

    # --- the code flow --------------------------------------------------------------------
    def start_login(self, redirect_uri: str, scope: str = "openid profile email") -> LoginStart:
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(64)
        query = urlencode({
            "client_id": self.settings.client_id, "response_type": "code", "redirect_uri": redirect_uri,
            "scope": scope, "state": state, "nonce": nonce,
            "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256",
        })
        endpoint = self._front(self.discovery()["authorization_endpoint"])
        return LoginStart(f"{endpoint}{'&' if '?' in endpoint else '?'}{query}", state, nonce, verifier)

    def _post(self, endpoint: str, form: dict[str, str]) -> httpx.Response:
        """A form POSTed to a back-channel endpoint with the client's credentials (the way the
        provider lists first, between client_secret_post and client_secret_basic)."""
        auth: httpx.Auth | None = None
        form = {**form, "client_id": self.settings.client_id}
        if self.settings.client_secret:
            methods = self.discovery().get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
            if "client_secret_post" in methods:
                form["client_secret"] = self.settings.client_secret
            else:
                auth = httpx.BasicAuth(self.settings.client_id, self.settings.client_secret)
        try:
            with httpx.Client(verify=self.settings.verify_tls, timeout=self.timeout) as http:
                return http.post(self._back(endpoint), data=form, headers={"Accept": "application/json"},
                                 auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise OSError(f"identity provider unreachable: {clip(str(exc) or type(exc).__name__, 160)}") from exc

    def _tokens(self, form: dict[str, str]) -> dict[str, Any]:
        """The token endpoint's answer; Unauthorized when it refuses (4xx), OSError when it fails."""
        r = self._post(self.discovery()["token_endpoint"], form)
        if r.status_code >= 500:
            raise OSError(f"identity provider unavailable: HTTP {r.status_code}")
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            error = body.get("error") if isinstance(body, dict) else None
            raise Unauthorized(f"token endpoint refused: HTTP {r.status_code} {clip(str(error), 60)}")
        return body

    def exchange_code(self, code: str, redirect_uri: str, verifier: str) -> dict[str, Any]:
        try:
            return self._tokens({"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                                 "code_verifier": verifier})
        except (Unauthorized, OSError) as exc:
            log.info("code exchange refused: %s", clip(str(exc), 200))
            raise Unauthorized("the identity provider refused the login: please try again") from exc

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        """New tokens; Unauthorized when the provider ended the session (OSError: unreachable)."""
        try:
            return self._tokens({"grant_type": "refresh_token", "refresh_token": refresh_token})
        except Unauthorized as exc:
            raise Unauthorized("your identity provider session has ended: log in again") from exc

    def userinfo(self, access_token: str) -> dict[str, Any]:
        """The user's claims at the userinfo endpoint (OSError: none or unreachable; Unauthorized:
        the token refused)."""
        endpoint = self.discovery().get("userinfo_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise DiscoveryError("the discovery document names no userinfo_endpoint")
        try:
            with httpx.Client(verify=self.settings.verify_tls, timeout=self.timeout) as http:
                r = http.get(self._back(endpoint), headers={"Authorization": f"Bearer {access_token}",
                                                            "Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise OSError(f"identity provider unreachable: {clip(str(exc) or type(exc).__name__, 160)}") from exc
        if r.status_code in (401, 403):
            raise Unauthorized(f"userinfo refused the access token: HTTP {r.status_code}")
        try:
            body = r.json() if r.status_code == 200 and len(r.content) <= MAX_DOCUMENT_BYTES else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise OSError(f"userinfo answered HTTP {r.status_code} without a JSON object")
        return body

    def end_session(self, refresh_token: str) -> bool:
        """End the provider's session behind this refresh token: Keycloak's back-channel logout, or
        the token's revocation (RFC 7009) at another provider. False if it could not."""
        try:
            doc = self.discovery()
            if self.settings.keycloak and doc.get("end_session_endpoint"):
                r = self._post(doc["end_session_endpoint"], {"refresh_token": refresh_token})
            elif doc.get("revocation_endpoint"):
                r = self._post(doc["revocation_endpoint"], {"token": refresh_token, "token_type_hint": "refresh_token"})
            else:
                return False
        except OSError as exc:
            log.warning("identity provider logout failed: %s", clip(str(exc), 200))
            return False
        if r.status_code not in (200, 204):
            log.warning("identity provider logout refused: HTTP %s", r.status_code)
            return False
        return True

    def end_session_url(self, post_logout_redirect_uri: str) -> str | None:
        """Where the browser goes to end the provider's own cookie session, then comes back."""
        try:
            endpoint = self.discovery().get("end_session_endpoint")
        except OSError:
            return None
        if not isinstance(endpoint, str) or not endpoint:
            return None
        query = urlencode({"client_id": self.settings.client_id, "post_logout_redirect_uri": post_logout_redirect_uri})
        front = self._front(endpoint)
        return f"{front}{'&' if '?' in front else '?'}{query}"

    def _front(self, endpoint: str) -> str:
        """An endpoint of the discovery document (fetched on the back channel) as browsers reach
        it: a Keycloak that answers with its back-channel address has it moved to the front one."""
        if self.server_url and endpoint.startswith(self.server_url):
            return self.browser_url + endpoint[len(self.server_url):]
        return endpoint

    def _back(self, endpoint: str) -> str:
        """An endpoint as visa's processes reach it: a Keycloak whose discovery names its front
        channel (KC_HOSTNAME) is called on the back channel."""
        if self.server_url and endpoint.startswith(self.browser_url):
            return self.server_url + endpoint[len(self.browser_url):]
        return endpoint


def _is_access_token(header: dict[str, Any], claims: dict[str, Any]) -> bool:
    """Access tokens say so: ``typ: at+jwt`` in the header (RFC 9068) or Keycloak's ``typ: Bearer``
    claim. An ID token also names our client as audience, and must not open the API."""
    typ = str(header.get("typ", "")).lower()
    return typ in {"at+jwt", "application/at+jwt"} or claims.get("typ") == "Bearer"


_clients: dict[tuple[Any, ...], OidcClient] = {}
_clients_lock = threading.Lock()


def client_for(settings: OidcSettings) -> OidcClient:
    """One client (and so one discovery and JWKS cache) per configured provider and process."""
    key = (settings.issuer, settings.server_url, settings.browser_url, settings.realm, settings.client_id,
           settings.client_secret, settings.audience, settings.verify_tls)
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


def claim_values(claims: dict[str, Any], path: str) -> list[str]:
    """The values of a multi-valued claim: a list, or a space-separated string (as ``scope``),
    the first 200 of them."""
    raw = _claim(claims, path)
    items = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
    return [item for item in items[:200] if isinstance(item, str) and 0 < len(item) <= 1024]


def _pattern(key: str) -> re.Pattern[str]:
    """A role_mapping key as a pattern: ``*`` matches any run of characters, the rest itself."""
    return re.compile(".*".join(re.escape(part) for part in key.split("*")), re.DOTALL)


def roles_from_claims(claims: dict[str, Any], settings: OidcSettings) -> frozenset[Role]:
    """The visa roles that the values of the role claim map to (only explicitly mapped ones):
    a value is looked up as itself, then against every key with a ``*``."""
    if not settings.role_claim:
        return frozenset()
    patterns = [(_pattern(key), role) for key, role in settings.role_mapping.items() if "*" in key]
    roles: set[Role] = set()
    for value in claim_values(claims, settings.role_claim):
        targets = [settings.role_mapping[value]] if value in settings.role_mapping else []
        targets += [role for pattern, role in patterns if pattern.fullmatch(value)]
        for target in targets:
            try:
                roles.add(Role(target.upper()))
            except ValueError:  # the settings validate the mapping: only hand-built settings get here
                log.warning("role_mapping maps %s to an unknown role %s", clip(value), clip(target))
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
        path = settings.oidc.user_group_claim
        # A token without the claim says nothing of the groups: they stay as the last one said.
        if path and _claim(claims, path) is not None:
            sync_claimed_groups(session, clock, user, claim_values(claims, path))
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
    """The actor of a bearer access token issued by the configured provider."""
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


def with_userinfo(client: Any, claims: dict[str, Any], access_token: str) -> dict[str, Any]:
    """A login's ID-token claims, completed by the userinfo endpoint's when the ID token carries no
    profile (a provider that gives the profile, and entitlements, there only). The ID token's own
    claims win; an answer about another subject is not taken (OpenID Connect Core 5.3.2)."""
    if claims.get("preferred_username") or not access_token:
        return claims
    try:
        info = client.userinfo(access_token)
    except (OSError, Unauthorized) as exc:
        log.warning("profile not read at the userinfo endpoint: %s", clip(str(exc), 200))
        return claims
    if info.get("sub") != claims.get("sub"):
        log.warning("userinfo answered for another subject: its claims are not taken")
        return claims
    return {**info, **claims}


def roles_in_tokens(client: Any, tokens: dict[str, Any], settings: OidcSettings,
                    fallback: dict[str, Any] | None = None) -> frozenset[Role]:
    """The visa roles in a token response: from the access token when it is a JWT carrying the role
    claim (Keycloak puts realm roles there), else from the ID token's claims (``fallback``), else
    from the userinfo endpoint (federation proxies often give entitlements there only)."""
    if not settings.role_claim:
        return frozenset()
    access_token = str(tokens.get("access_token", ""))
    try:
        claims: dict[str, Any] | None = client.validate(access_token)
    except Unauthorized:
        claims = fallback
    if claims is not None and _claim(claims, settings.role_claim) is not None:
        return roles_from_claims(claims, settings)
    try:
        info = client.userinfo(access_token)
    except (OSError, Unauthorized) as exc:
        log.warning("roles not read at the userinfo endpoint: %s", clip(str(exc), 200))
        return frozenset()
    if claims is not None and info.get("sub") != claims.get("sub"):
        # OpenID Connect Core 5.3.2: an answer about another subject is not this user's.
        log.warning("userinfo answered for another subject: the provider's roles are dropped")
        return frozenset()
    return roles_from_claims(info, settings)


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
        claims = client.validate(str(tokens.get("id_token", "")), audience=settings.oidc.client_id, nonce=flow["nonce"],
                                 access_token=str(tokens.get("access_token") or "") or None)
        claims = with_userinfo(client, claims, str(tokens.get("access_token") or ""))
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
