"""Every error becomes a clear answer: JSON for the API, a page otherwise. Never a traceback."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from pydantic import ValidationError
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException

from visa.errors import VisaError, http_status

log = logging.getLogger(__name__)


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/api" or request.accept_mimetypes.best == "application/json"


def validation_body(exc: ValidationError) -> dict[str, object]:
    problems = [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]} for e in exc.errors()
    ]
    first = problems[0] if problems else {"field": "(body)", "message": "invalid"}
    return {
        "error": "invalid_input",
        "message": f"{first['field']}: {first['message']}",
        "field": first["field"],
        "problems": problems,
    }


def _respond(body: dict[str, object], status: int):
    if wants_json():
        return jsonify(body), status
    try:
        return render_template("error.html", error=body, status=status), status
    except Exception:  # no template yet: plain text is still a clear answer
        return f"{status}: {body.get('message')}", status, {"Content-Type": "text/plain; charset=utf-8"}


def install(app: Flask) -> None:
    @app.errorhandler(VisaError)
    def _domain(exc: VisaError):
        return _respond(exc.to_dict(), http_status(exc))

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError):
        return _respond(validation_body(exc), 400)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        name = (exc.name or "error").lower().replace(" ", "_")
        return _respond({"error": name, "message": exc.description or exc.name}, exc.code or 500)

    @app.errorhandler(DataError)
    @app.errorhandler(OverflowError)
    def _out_of_range(exc: Exception):
        # Input checks bound every number; this is the backstop when the database still refuses a value.
        log.warning("value refused by the database on %s %s: %s", request.method, request.path[:200], exc)
        return _respond({"error": "invalid_input", "message": "a value in the request is out of range"}, 400)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path[:200])
        return _respond({"error": "internal", "message": "internal error; it has been logged"}, 500)
