"""The Flask application factory."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import Flask, jsonify
from sqlalchemy import text
from werkzeug.routing import IntegerConverter, Map

import visa.models  # noqa: F401  (every mapped class known before the first query)
from visa.clock import Clock, system_clock
from visa.db import Database
from visa.errors import VisaError
from visa.instances.metrics import InstanceStates
from visa.policy import allowed
from visa.provisioning.sources import check_sources
from visa.services import Services
from visa.settings import Settings, get_settings
from visa.types import MAX_ID
from visa.web import context, csrf, errors, events, security

log = logging.getLogger(__name__)


class DbIdConverter(IntegerConverter):
    """`<int:...>` in every route: a number past the 32-bit ids is a 404, not a database overflow."""

    def __init__(self, map: Map, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def create_app(
    settings: Settings | None = None,
    *,
    database: Database | None = None,
    clock: Clock | None = None,
    check_schema: bool = True,
) -> Flask:
    settings = settings or get_settings()
    check_sources(settings.provisioning)  # the rules the settings' values follow (InvalidInput)
    if database is None and not settings.database_url:
        settings.private_data_dir()  # before SQLite creates its file in it
    database = database or Database(settings.sqlalchemy_url, **settings.engine_options())
    if check_schema:
        from visa.migrate import require_head

        require_head(database.engine)
    app = Flask(__name__, template_folder="../templates", static_folder="../static", static_url_path="/static")
    app.url_map.converters["int"] = DbIdConverter
    app.config.update(
        SECRET_KEY=settings.resolved_secret_key(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        SESSION_COOKIE_NAME="visa_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        JSON_SORT_KEYS=False,
    )
    app.extensions["visa"] = Services(settings=settings, database=database, clock=clock or system_clock)
    from visa import logs, metrics

    logs.install(app, json_lines=settings.log_json)  # first: later hooks log with the request id
    metrics.install(app, [InstanceStates(database)])
    context.install(app)
    errors.install(app)
    security.install(app)
    csrf.install(app)
    events.init_app(app)
    _register_blueprints(app)

    @app.get("/health")
    def health():
        return jsonify({"status": "ok"})

    @app.get("/health/ready")
    def ready():
        # Anyone (a load balancer) learns up or down; why, only an administrator or the log:
        # database and cloud errors name hosts, ports, paths and accounts.
        body: dict[str, object]
        try:
            with database.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # a readiness probe reports, it does not raise
            log.warning("readiness: database unavailable: %s", str(exc)[:500])
            body, status = {"status": "unavailable", "database": "unavailable"}, 503
        else:
            from visa.clouds.service import cloud_statuses

            # Clouds (short timeout, cached): a cloud down degrades, it does not take the web out of service.
            clouds = cloud_statuses(app.extensions["visa"])
            problems = {c.name: c.message for c in clouds if c.status == "unavailable"}
            for name, message in problems.items():
                log.warning("readiness: cloud %s unavailable: %s", name, str(message)[:500])
            body, status = {"status": "degraded" if problems else "ok", "database": "ok"}, 200
            if _is_admin():
                body.update(clouds={c.name: c.status for c in clouds}, problems=problems)
        return jsonify(body), status

    return app


def _is_admin() -> bool:
    try:
        actor = context.current_actor(required=False)
    except VisaError:  # a bad token: anonymous here
        return False
    return actor is not None and actor.user is not None and allowed(actor, "view_cloud_status")


def _register_blueprints(app: Flask) -> None:
    from visa.admin import register as register_admin
    from visa.auth.api import bp as auth_api
    from visa.auth.pages import bp as auth_pages
    from visa.bookings.api import bp as bookings_api
    from visa.bookings.pages import bp as booking_pages
    from visa.catalogue.api import bp as catalogue_api
    from visa.experiments.api import bp as experiments_api
    from visa.gateway.api import bp as gateway_api
    from visa.gateway.api import lab as gateway_jupyter
    from visa.help.pages import bp as help_pages
    from visa.instances.api import bp as instances_api
    from visa.instances.extensions_api import bp as extensions_api
    from visa.instances.pages import bp as instance_pages
    from visa.instances.thumbnails_api import bp as thumbnails_api
    from visa.sharing.api import bp as members_api
    from visa.sharing.api import redeem_bp as invitations_api
    from visa.sharing.pages import bp as sharing_pages
    from visa.transfers.api import bp as files_api
    from visa.usage.api import bp as usage_api
    from visa.users.api import bp as users_api
    from visa.web.pages import bp as pages
    from visa.web.site import bp as site

    for bp in (auth_api, catalogue_api, experiments_api, instances_api):
        app.register_blueprint(bp)
    app.register_blueprint(auth_pages)
    app.register_blueprint(site)
    app.register_blueprint(help_pages)
    app.register_blueprint(members_api)
    app.register_blueprint(invitations_api)
    app.register_blueprint(users_api)
    for bp in (pages, instance_pages, sharing_pages, thumbnails_api):  # pages, and the REST part only they use
        app.register_blueprint(bp)
    app.register_blueprint(gateway_api)
    app.register_blueprint(gateway_jupyter)
    register_admin(app)
    app.register_blueprint(extensions_api)
    app.register_blueprint(usage_api)
    app.register_blueprint(files_api)
    app.register_blueprint(bookings_api)
    app.register_blueprint(booking_pages)
