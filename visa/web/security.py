"""Security headers on every response."""

from __future__ import annotations

from flask import Flask


def install(app: Flask) -> None:
    @app.after_request
    def _headers(response):  # noqa: ANN001, ANN202
        h = response.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "SAMEORIGIN")
        h.setdefault("Referrer-Policy", "same-origin")
        h.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data: blob:; connect-src 'self' ws: wss:; "
            "frame-src 'self'; frame-ancestors 'self'; object-src 'none'; base-uri 'self'",
        )
        return response
