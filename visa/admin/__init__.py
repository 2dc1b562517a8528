"""Administration: the admin REST API and pages, and the pieces the operators' tools share."""

from __future__ import annotations

from flask import Flask


def register(app: Flask) -> None:
    """Blueprints of the admin side: admin API and pages, notifications, audit, the API document."""
    from visa.admin.api import bp as admin_api
    from visa.admin.pages import bp as admin_pages
    from visa.announcements.api import bp as notifications_api
    from visa.audit.api import bp as audit_api
    from visa.openapi import bp as openapi_bp

    for bp in (admin_api, audit_api, notifications_api, openapi_bp, admin_pages):
        app.register_blueprint(bp)
