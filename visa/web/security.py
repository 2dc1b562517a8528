"""Security headers on every response, and cookie settings that follow the public URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, request

# Pages and API answers may carry personal data or one-time values: never cached.
NO_STORE_PREFIXES = ("/api/", "/login", "/logout", "/auth/")


def install(app: Flask) -> None:
    settings = app.extensions["visa"].settings
    https = settings.base_url.startswith("https://")
    if https:
        # Served over TLS: the session cookie never travels in clear text.
        app.config["SESSION_COOKIE_SECURE"] = True
    if app.config["SESSION_COOKIE_SECURE"]:
        # The browser keeps a __Host- cookie only host-only, Secure and for Path=/: a sibling host
        # of the same site cannot plant one that shadows it (cookie tossing).
        app.config["SESSION_COOKIE_NAME"] = "__Host-visa_session"
    # Websockets reach visa's own origin only (the desktop relay): a script that got into a page
    # cannot open one to a server of its choosing. 'self' alone does not cover ws: everywhere.
    public = urlsplit(settings.base_url)
    own_ws = f"{'wss' if https else 'ws'}://{public.netloc}"
    # A facility's logo may come from its own web site (settings site.logo): that origin only.
    logo = f" {settings.site.logo_origin}" if settings.site.logo_origin else ""
    csp = (f"default-src 'self'; img-src 'self' data: blob:{logo}; connect-src 'self' {own_ws}; "
           "frame-src 'self'; frame-ancestors 'self'; object-src 'none'; base-uri 'self'")

    @app.after_request
    def _headers(response):
        h = response.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "SAMEORIGIN")
        h.setdefault("Referrer-Policy", "same-origin")
        h.setdefault("Content-Security-Policy", csp)
        h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()")
        if https:
            h.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        if request.path.startswith(NO_STORE_PREFIXES) and "Cache-Control" not in h:
            h["Cache-Control"] = "no-store"
        return response
