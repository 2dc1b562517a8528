"""Login pages: ``/login`` (local form or the identity provider's button), ``/login/oidc``,
``/auth/callback`` and ``/logout``.

The local form carries the CSRF token of the session the login page opened, so another
site cannot log a browser into an account of its choosing. After login the browser goes
to ``next`` only if it is a same-origin relative path.
"""

from __future__ import annotations

import hmac
import logging
import time

from flask import Blueprint, redirect, render_template, request, session, url_for

from visa.auth import web
from visa.auth.login import local_login, record_logout
from visa.auth.logsafe import clip
from visa.errors import InvalidInput, RateLimited, Unauthorized, VisaError
from visa.web.context import current_actor, current_login, db_session, login_session, logout_session, services
from visa.web.csrf import csrf_token

log = logging.getLogger(__name__)

bp = Blueprint("auth_pages", __name__)
bp.before_app_request(web.before_request)


def _callback_url() -> str:
    return services().settings.base_url.rstrip("/") + url_for("auth_pages.callback")


def _login_page(error: str | None = None, status: int = 200, next_url: str = "/") -> tuple[str, int]:
    settings = services().settings
    return render_template(
        "auth/login.html", error=error, next=next_url, local=settings.uses_local_accounts,
        oidc=bool(settings.oidc.enabled), provider=settings.oidc.display_name,
        logged_out="logged_out" in request.args,
    ), status


@bp.get("/login")
def login_page():
    csrf_token()  # opens the session the form's token belongs to
    return _login_page(next_url=web.safe_next(request.args.get("next")))


@bp.post("/login")
def login():
    svc = services()
    next_url = web.safe_next(request.form.get("next"))
    if not svc.settings.uses_local_accounts:
        return _login_page("Local accounts are switched off: log in with the identity provider.", 403, next_url)
    expected = session.get("csrf")
    if not expected or not hmac.compare_digest(str(expected), request.form.get("csrf_token", "")):
        return _login_page("Your login form expired: please try again.", 400, next_url)
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    if not (0 < len(username) <= 64 and 0 < len(password) <= 1024):
        return _login_page("Enter your username and password.", 400, next_url)
    try:
        user = local_login(db_session(), svc, web.limits(), username, password, web.client_ip())
    except RateLimited as exc:
        return _login_page(exc.message, 429, next_url)
    except Unauthorized:
        return _login_page("Wrong username or password.", 401, next_url)
    login_session(user, "local")
    return redirect(next_url, 303)


@bp.get("/login/oidc")
def login_oidc():
    from visa.auth.oidc import client_for

    settings = services().settings
    if not settings.oidc.enabled:
        return redirect(url_for("auth_pages.login_page"), 303)
    try:
        start = client_for(settings.oidc).start_login(_callback_url())
    except OSError as exc:  # its discovery document cannot be read: say so, and log why
        log.warning("login not started: %s", clip(str(exc), 300))
        return _login_page("The identity provider cannot be reached: please try again later.", 503,
                           web.safe_next(request.args.get("next")))
    session["oidc_login"] = {
        "state": start.state, "nonce": start.nonce, "verifier": start.verifier,
        "next": web.safe_next(request.args.get("next")), "at": time.time(),
    }
    return redirect(start.url, 303)


@bp.get("/auth/callback")
def callback():
    from visa.auth.oidc import LoginIncomplete, complete_login

    svc = services()
    flow = session.pop("oidc_login", None)
    if not svc.settings.oidc.enabled:
        return redirect(url_for("auth_pages.login_page"), 303)
    answer = {k: request.args[k] for k in ("error", "state", "code") if k in request.args}
    try:
        done = complete_login(db_session(), svc, web.limits(), flow, answer, _callback_url(), web.client_ip())
    except RateLimited as exc:
        return _login_page(exc.message, 429)
    except LoginIncomplete:
        return _login_page("The login did not complete: please try again.", 400)
    except VisaError as exc:
        return _login_page(exc.message if isinstance(exc, Unauthorized | InvalidInput) else "Login failed.", 401)
    # The refresh token stays on the server, in the session's row: the cookie holds only its id.
    login_session(done.user, "oidc", refresh_token=done.refresh_token, refresh_at=web.refresh_at(done.expires_in),
                  idp_roles=done.roles)
    return redirect(done.next, 303)


@bp.get("/logout")
def logout_page():
    # Logging out changes state: a GET only shows the button (a link cannot log anyone out).
    return render_template("auth/logout.html"), 200


@bp.post("/logout")
def logout():
    return redirect(end_session(), 303)


def end_session() -> str:
    """End the visa session, and the provider's one when we came through it; where to go next."""
    from visa.auth.oidc import client_for

    svc = services()
    actor = current_actor(required=False)
    row = current_login()
    method, refresh_token = (row.method, row.refresh_token) if row is not None else ("local", None)
    record_logout(actor, db_session(), svc, method)
    logout_session()  # the row goes: the cookie, or a copy of it, opens nothing any more
    done = url_for("auth_pages.login_page", logged_out=1)
    if method != "oidc" or not svc.settings.oidc.enabled:
        return done
    client = client_for(svc.settings.oidc)
    if refresh_token:
        client.end_session(refresh_token)
    return client.end_session_url(svc.settings.base_url.rstrip("/") + done) or done

