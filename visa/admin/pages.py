"""Admin pages (placeholder until the views land)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin_pages", __name__, url_prefix="/admin")
