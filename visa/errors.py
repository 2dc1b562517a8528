"""Domain errors. They know nothing of HTTP: the web layer maps them to status codes."""

from __future__ import annotations

import re

# An absolute path, not inside a URL (no word character, ':' or '/' just before it).
_HOST_PATH = re.compile(r"(?<![\w:/.~-])/(?:[\w.@+,=-]+/)*([\w.@+,=-]+)/?")


def without_host_paths(text: str) -> str:
    """A message for users: host paths (``/var/lib/visa/local-instances/…/home``) say how the
    machine is laid out and are no user's business: only their last part is kept (``…/home``).
    The full text belongs in the log."""
    return _HOST_PATH.sub(lambda m: f"…/{m.group(1)}", text)


class VisaError(Exception):
    """Base of every error a user may be shown."""

    code = "error"

    def __init__(self, message: str, *, field: str | None = None, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(VisaError):
    code = "invalid_input"


class NotFound(VisaError):
    code = "not_found"


class Forbidden(VisaError):
    code = "forbidden"


class Unauthorized(VisaError):
    code = "unauthorized"


class Conflict(VisaError):
    code = "conflict"


class QuotaExceeded(VisaError):
    code = "quota_exceeded"


class NoCapacity(VisaError):
    """The cloud has no room for this machine now (known before asking it to make one)."""

    code = "no_capacity"


class RateLimited(VisaError):
    code = "rate_limited"


class TooLarge(VisaError):
    """More bytes than a limit allows (an upload, a download)."""

    code = "too_large"


class RangeNotSatisfiable(VisaError):
    code = "range_not_satisfiable"


class CloudError(VisaError):
    """A cloud refused or failed an operation; ``transient`` ones may be retried."""

    code = "cloud_error"

    def to_dict(self) -> dict[str, object]:
        body = super().to_dict()
        body["message"] = without_host_paths(self.message)
        return body

    def __init__(self, message: str, *, transient: bool = False, **details: object) -> None:
        super().__init__(message, **details)
        self.transient = transient


HTTP_STATUS: dict[type[VisaError], int] = {
    InvalidInput: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    QuotaExceeded: 409,
    NoCapacity: 409,
    TooLarge: 413,
    RangeNotSatisfiable: 416,
    RateLimited: 429,
    CloudError: 502,
}


def http_status(error: VisaError) -> int:
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 400
