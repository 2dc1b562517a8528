"""The OpenAPI document: it covers every /api route, and the API keeps its word (schemathesis).

The fuzzing runs in-process against the Flask app (WSGI), as an admin and as a user, with
personal API tokens, on both databases: no 5xx, and every status, content type and body
matches the document. Example counts stay modest: the machines have two cores.
"""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.admin.world import bearer, build

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES = int(os.environ.get("VISA_FUZZ_EXAMPLES", "6"))


def test_every_api_route_is_in_the_document(app) -> None:
    doc = app.test_client().get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<(?:[a-z]+(?:\([^)]*\))?:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            if "<any(" in rule.rule:
                continue  # expanded into one path per value
            assert (path, method.lower()) in documented, f"{method} {rule.rule} is not in the document"
    ops = [op for ops in doc["paths"].values() for op in ops.values()]
    mine = [op for op in ops if op.get("tags") and "admin" in op["tags"]]
    assert len(mine) >= 30 and all(not op.get("x-undocumented") for op in mine)
    # Every handler declares its own contract: nothing is documented on its behalf, nothing left out.
    assert [op["operationId"] for op in ops if op.get("x-undocumented")] == []
    # Catalogue edits say that the files win.
    flavours = doc["paths"]["/api/admin/flavours"]["post"]
    assert "visa catalogue apply" in flavours["description"]
    assert flavours["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FlavourSpec"}


def test_docs_page_is_served_locally(app) -> None:
    r = app.test_client().get("/api/docs")
    assert r.status_code == 200 and b"swagger-ui" in r.data
    assert b"http://" not in r.data and b"https://" not in r.data  # no CDN


def _checks() -> list:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _operations(schema) -> list:
    out = []
    for result in schema.get_all_operations():
        op = result.ok()
        definition = op.definition.raw
        if definition.get("x-streaming") or definition.get("x-undocumented"):
            continue  # streams never end; undocumented routes promise nothing
        if op.path in ("/api/docs", "/api/login", "/api/logout"):
            continue  # HTML; session login/logout would change who the token speaks for
        out.append(op)
    return out


def _fuzz(strategy, headers: dict[str, str], checks: list):
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case) -> None:
        case.call_and_validate(headers=headers, checks=checks)

    return run


def test_the_api_matches_its_document(app, db, clock) -> None:
    world = build(db, clock)
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    checks = _checks()
    known = {"uid": list(world.uids.values()), "name": ["esrf.medium", "desktop"], "username": ["alice", "bob"],
             "plan_id": [world.plan_id], "role": ["GUEST", "STAFF"]}
    failures: list[str] = []
    for op in _operations(schema):
        params = [p.name for p in op.path_parameters]
        strategies = [op.as_strategy()]
        if params and all(p in known for p in params):
            strategies.append(st.builds(dict, **{p: st.sampled_from(known[p]) for p in params}).flatmap(
                lambda pp, op=op: op.as_strategy(path_parameters=pp)))
        for token in (world.user_token, world.admin_token):
            try:
                _fuzz(st.one_of(*strategies), bearer(token), checks)()
            except Exception as exc:  # collect every operation's failure, report them together
                failures.append(f"{op.method.upper()} {op.path}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
