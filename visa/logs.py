"""Logging: plain or JSON lines, each carrying the id of the request it belongs to.

A request id comes from the ``X-Request-ID`` header when it is a sane token, else one is
made; it is echoed in the response and set in every log line written while the request is
handled. Values users control (paths, messages built from input) are cut to a bounded
length so one request cannot flood the logs.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, request

MAX_VALUE = 500
MAX_MESSAGE = 4000
REQUEST_ID_HEADER = "X-Request-ID"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("visa_request_id", default=None)
access_log = logging.getLogger("visa.access")

# Attributes every LogRecord has: anything else was passed with ``extra=`` and is kept.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "request_id", "color_message"}


def truncate(value: Any, limit: int = MAX_VALUE) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"…[{len(value) - limit} more]"
    return value


# One-time tokens travel in some URLs (the desktop websocket, the user-content login):
# uvicorn logs a websocket's path with its query string, so every line is cleaned. An
# invitation link carries its token in the path (``/invite/<token>``, also URL-encoded in the
# login page's ``next``), and so does a view link (``/view/<token>``): whoever reads the logs
# must not be able to join or watch with them.
_SECRET_PARAM = re.compile(r"([?&;](?:token|_xsrf)=)[^&\s\"';]+", re.IGNORECASE)
_SECRET_PATH = re.compile(r"((?:/|%2F)(?:invite|view)(?:/|%2F))[^/?#&\s\"';%]+", re.IGNORECASE)


def redact(text: str) -> str:
    if "=" in text:
        text = _SECRET_PARAM.sub(r"\1[redacted]", text)
    return _SECRET_PATH.sub(r"\1[redacted]", text)


class RedactFilter(logging.Filter):
    """Removes token values from URLs in a line (and in its extra fields) before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in vars(record).items():
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the formatter shows it as it is
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the line
            message = str(record.msg)
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": truncate(message, MAX_MESSAGE),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = truncate(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = truncate(self.formatException(record.exc_info), MAX_MESSAGE * 4)
        return json.dumps(line, default=str, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get() or "-"
        text = super().format(record)
        return truncate(text, MAX_MESSAGE * 4)


_configured = False


def configure(json_lines: bool, level: int = logging.INFO, *, force: bool = False) -> None:
    """Send every logger (uvicorn's included) to one stderr handler. Once per process."""
    global _configured
    if _configured and not force:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    handler.addFilter(RedactFilter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_visa", False):
            root.removeHandler(old)
    handler._visa = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error", "gunicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    # visa writes its own access line (with the request id); uvicorn's would repeat it.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    _configured = True


def _request_id() -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _VALID_ID.fullmatch(given) else uuid.uuid4().hex


def install(app: Flask, *, json_lines: bool) -> None:
    """Request ids and one access line per request; configures logging if nobody did."""
    if json_lines or not logging.getLogger().handlers:
        configure(json_lines)

    @app.before_request
    def _begin() -> None:
        rid = _request_id()
        g.request_id = rid
        g.request_started = time.perf_counter()
        g.request_id_token = request_id_var.set(rid)

    @app.after_request
    def _end(response: Response) -> Response:
        rid = g.get("request_id")
        if rid:
            response.headers[REQUEST_ID_HEADER] = rid
            started = g.get("request_started", time.perf_counter())
            if request.path not in ("/health", "/metrics"):
                actor = g.get("actor")
                access_log.info(
                    "%s %s %s", request.method, truncate(request.path, 200), response.status_code,
                    extra={
                        "method": request.method, "path": truncate(request.path, 200),
                        "status": response.status_code,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                        "user": getattr(actor, "name", None), "remote": request.remote_addr,
                    },
                )
        return response

    @app.teardown_request
    def _reset(_exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            try:
                request_id_var.reset(token)
            except ValueError:  # set in another context (a thread hop): just clear it
                request_id_var.set(None)
