"""CSRF protection for cookie-authenticated state changes.

A per-session token is given to pages (``csrf_token()`` in templates, the ``csrf-token``
meta tag) and must come back as the ``X-CSRF-Token`` header or a ``csrf_token`` form field
on every POST, PUT, PATCH and DELETE that relies on the session cookie. Requests carrying
a bearer token are exempt: a browser never adds one on its own.

Also, any state-changing request whose ``Origin`` (or, without one, ``Referer``) names
another site is refused, exempt endpoints included: that stops login CSRF (another site
logging a browser into an account of its choosing) where no token can exist yet.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from flask import Flask, current_app, request, session

from visa.errors import Forbidden

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Logging in has no session to bind a token to yet; it is protected by SameSite=Lax
# cookies and by requiring JSON or a same-origin form post.
EXEMPT_ENDPOINTS = frozenset({"auth_api.login", "auth_pages.login", "auth_pages.callback"})


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]  # type: ignore[no-any-return]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def cross_site() -> bool:
    """Whether the browser says this request comes from a page of another site."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source:
        return False  # not a browser, or one that hides it: the token still decides
    if source == "null":
        return True
    ours = {_origin(request.host_url)}
    visa = current_app.extensions.get("visa")
    if visa is not None:
        ours.add(_origin(visa.settings.base_url))
    return _origin(source) not in ours


def check_request() -> None:
    if request.method in SAFE_METHODS:
        return
    if cross_site() and request.headers.get("Authorization", "")[:7].lower() != "bearer ":
        raise Forbidden("cross-site request refused")
    if request.endpoint in EXEMPT_ENDPOINTS:
        return
    if request.headers.get("Authorization", "")[:7].lower() == "bearer ":
        return
    expected = session.get("csrf")
    given = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
    if not expected or not hmac.compare_digest(str(expected), given):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")


def install(app: Flask) -> None:
    app.before_request(check_request)
    app.jinja_env.globals["csrf_token"] = csrf_token
