"""REST: the audit log for administrators (filter, paginate)."""

from __future__ import annotations

from flask import Blueprint

from visa.audit.schemas import AuditOut, AuditQuery
from visa.audit.serialize import audit_out
from visa.audit.service import audit_events
from visa.openapi import doc, parse_query, respond
from visa.paging import Page
from visa.web.context import current_actor, db_session

bp = Blueprint("audit_api", __name__, url_prefix="/api/admin")


@bp.get("/audit")
@doc("Audit events, newest first: filter by action (or 'prefix.'), actor, target, time",
     tags=["admin"], query=AuditQuery, response=Page[AuditOut])
def events():
    q = parse_query(AuditQuery)
    items, total = audit_events(current_actor(), db_session(), q)
    return respond(Page(items=[audit_out(e) for e in items], total=total, page=q.page, per_page=q.per_page))
