"""CSRF protection for cookie-authenticated state changes.

A per-session token is given to pages (``csrf_token()`` in templates, the ``csrf-token``
meta tag) and must come back as the ``X-CSRF-Token`` header or a ``csrf_token`` form field
on every POST, PUT, PATCH and DELETE that relies on the session cookie. Requests carrying
a bearer token are exempt: a browser never adds one on its own.
"""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, request, session

from visa.errors import Forbidden

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Logging in has no session to bind a token to yet; it is protected by SameSite=Lax
# cookies and by requiring JSON or a same-origin form post.
EXEMPT_ENDPOINTS = frozenset({"auth_api.login", "auth_pages.login", "auth_pages.callback"})


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]  # type: ignore[no-any-return]


def check_request() -> None:
    if request.method in SAFE_METHODS or request.endpoint in EXEMPT_ENDPOINTS:
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
