"""REST: the audit log for administrators (filter, paginate)."""

from __future__ import annotations

from flask import Blueprint

from visa.admin import schemas as S
from visa.admin.serialize import audit
from visa.admin.service import audit_events
from visa.openapi import doc, parse_query, respond
from visa.web.context import current_actor, db_session

bp = Blueprint("audit_api", __name__, url_prefix="/api/admin")


@bp.get("/audit")
@doc("Audit events, newest first: filter by action (or 'prefix.'), actor, target, time",
     tags=["admin"], query=S.AuditQuery, response=S.Page[S.AuditOut])
def events():  # noqa: ANN201
    q = parse_query(S.AuditQuery)
    items, total = audit_events(current_actor(), db_session(), q)
    return respond(S.Page(items=[audit(e) for e in items], total=total, page=q.page, per_page=q.per_page))
