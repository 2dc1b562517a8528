"""The facility's face (settings ``site``): its colours as a stylesheet every page links (the
pages' Content-Security-Policy allows no inline style), and its logo file."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, send_file

bp = Blueprint("site", __name__)

# A logo is shown in an <img>; opened on its own, an SVG's scripts must not run on visa's origin.
_LOGO_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
                 "Cache-Control": "public, max-age=3600"}


def _site():  # the settings' SiteSettings
    return current_app.extensions["visa"].settings.site


@bp.get("/site.css")
def stylesheet() -> Response:
    site = _site()
    css = f":root {{ --brand: {site.brand_colour}; --accent: {site.accent_colour}; }}\n"
    return Response(css, mimetype="text/css", headers={"Cache-Control": "public, max-age=300"})


@bp.get("/site/logo")
def logo() -> Response:
    site = _site()
    if site.logo is None or "://" in site.logo:
        abort(404)
    path = Path(site.logo)
    if not path.is_file():
        abort(404)
    kind = "image/svg+xml" if path.suffix.lower() == ".svg" else mimetypes.guess_type(path.name)[0]
    response = send_file(path, mimetype=kind or "application/octet-stream", max_age=3600)
    response.headers.update(_LOGO_HEADERS)
    return response
