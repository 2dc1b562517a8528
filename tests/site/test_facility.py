"""A facility plugs visa into its own world by settings and files alone, on the real parts the
suite runs: its identity provider (the npm OIDC server as a plain issuer found by discovery, roles
from eduperson_entitlement claims), its OpenStack (the sandbox, reached through an application
credential made on its Keystone and named in a clouds.yaml entry), a network rule for an
instrument's control network during beamtime, and the user office's export with the instrument's
scientist. Nothing is set through visa's API or database by hand.

Then, in real headless Chromium: alice logs in at the provider, creates a machine for her running
experiment on id21; the server Nova holds carries the rule's security group; irene, id21's
scientist (by the import), logs in at the provider and finds alice's machine on /support, and only
that one. Any console error or CSP violation fails the test (tests/browser.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.auth.test_oidc import VO, running_idp
from tests.browser import ROOT, allow_errors, chromium, cli, require_chromium, served, visa_env
from tests.clouds.conftest import (  # noqa: F401  (fixtures, shared with the cloud tests)
    Credentials,
    application_credentials,
    openstack_sandbox,
    run_prefix,
)
from tests.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ALICE_SUB = "4f1c2a8e-0000-4000-8000-00000000a11c"  # the test provider's alice
IRENE_SUB = "9b7e3d10-5c2a-4f11-8e0d-1d2c3b4a5f60"
ARTIFACTS = ROOT / "tests" / "artifacts" / "site"


def _facility(root: Path, *, issuer: str, db_url: str, clouds_yaml: Path, control_group: str, base: str,
              port: int) -> Path:
    """The facility's files: settings, catalogue (sizes, an image, a network rule), the export."""
    (root / "catalogue" / "flavours").mkdir(parents=True)
    (root / "catalogue" / "images").mkdir()
    (root / "catalogue" / "network-rules").mkdir()
    (root / "catalogue" / "flavours" / "esrf.medium.yaml").write_text(
        (ROOT / "flavours" / "esrf.medium.yaml").read_text())
    (root / "catalogue" / "images" / "desktop.yaml").write_text(
        "name: desktop\nenvironment: Desktop\nversion: \"sandbox\"\ncloud_image: visa-sandbox-image\n"
        "protocols:\n  - {protocol: VNC, port: 5901}\nplans:\n  - {flavour: esrf.medium, preset: true}\n")
    (root / "catalogue" / "network-rules" / "id21.yaml").write_text(yaml.safe_dump([
        {"name": "id21-control", "description": "id21's control network during beamtime",
         "instruments": ["id21"], "beamtime": True, "security_groups": [control_group]},
    ]))
    today = datetime.now(UTC).date()
    (root / "export.json").write_text(json.dumps({
        "experiments": [
            {"id": "ev280-id21-1", "proposal": "ev280", "proposal_title": "Arsenic speciation", "instrument": "id21",
             "start_date": (today - timedelta(days=1)).isoformat(), "end_date": (today + timedelta(days=2)).isoformat(),
             "title": "XRF mapping", "members": [{"username": "alice", "full_name": "Alice Liddell",
                                                 "subject": ALICE_SUB, "uid_number": 23456, "gid_number": 23456}]},
        ],
        "instruments": [{"name": "id21", "scientists": [{"username": "irene", "full_name": "Irene Instrument",
                                                          "subject": IRENE_SUB}]}],
    }))
    (root / "visa.toml").write_text(f'''
base_url = "{base}"
database_url = "{db_url}"
secret_key = "site-test-secret-0123456789abcdef"
default_cloud = "facility"
user_content_domain = "instances.localhost:{port}"

[oidc]
issuer = "{issuer}"
name = "Example AAI"
client_id = "visa"
client_secret = "visa-secret"
role_claim = "eduperson_entitlement"

[oidc.role_mapping]
"{VO}:visa-admin:role=*#aai.example.eu" = "ADMIN"
''')
    (root / "cloud.json").write_text(json.dumps({"cloud": "facility", "clouds_yaml": str(clouds_yaml)}))
    return root


def _clouds_yaml(path: Path, creds: Credentials, cred: Any) -> Path:
    """The entry the cloud's operators hand out: an application credential, its region and interface."""
    path.write_text(yaml.safe_dump({"clouds": {"facility": {
        "auth_type": "v3applicationcredential",
        "auth": {"auth_url": creds.auth_url, "application_credential_id": cred.id,
                 "application_credential_secret": cred.secret},
        "region_name": "RegionOne", "interface": "public", "identity_api_version": 3,
    }}}))
    return path


def _login(browser: Any, base: str, idp_issuer: str, username: str) -> Any:
    ctx = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(30_000)
    page = ctx.new_page()
    page.goto("/login")
    page.click("#login-oidc")
    page.wait_for_selector("#kc-form-login")
    assert page.url.startswith(idp_issuer.rstrip("/") + "/"), page.url  # the provider's own page
    page.fill("#username", username)
    page.fill("#password", f"{username}-password")
    page.click("#kc-login")
    page.wait_for_url(f"{base}/")
    return page


def _seen(page: Any, selector: str, log: Path) -> None:
    """Wait for ``selector``; if it never shows, say what the page and visa's log said instead."""
    try:
        page.locator(selector).first.wait_for(timeout=60_000)
    except Exception as exc:
        from tests.browser import ERRORS

        raise AssertionError(f"{selector} not shown; the browser said {ERRORS}:\n{page.inner_text('main')[:3000]}\n"
                             f"{log.read_text()[-2000:]}") from exc


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # a facility's database; several processes share it
def test_a_facility_configured_by_files_alone(
    committed_db, openstack_sandbox: dict[str, Any], application_credentials: Credentials,  # noqa: F811
    run_prefix: str, tmp_path: Path,  # noqa: F811
) -> None:
    require_chromium()
    import openstack

    prefix = f"{run_prefix}site-"
    control_group = f"{prefix}id21-control"
    keys = ("auth_url", "username", "password", "project_name", "user_domain_name", "project_domain_name")
    admin_conn = openstack.connect(**{k: openstack_sandbox[k] for k in keys}, region_name="RegionOne",
                                   load_yaml_config=False, load_envvars=False)
    # The group the facility's network team made for id21's control network, in visa's project.
    group = admin_conn.network.create_security_group(name=control_group, description="id21 control network")
    cred = application_credentials.new("site")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        with running_idp("plain", OIDC_REDIRECTS=f"{base}/auth/callback",
                         OIDC_POST_LOGOUT=f"{base}/login?logged_out=1") as idp:
            idp.register("irene", "irene-password", sub=IRENE_SUB)
            root = _facility(tmp_path / "facility", issuer=idp.issuer, db_url=committed_db.url,
                             clouds_yaml=_clouds_yaml(tmp_path / "clouds.yaml", application_credentials, cred),
                             control_group=control_group, base=base, port=port)
            cloud_config = json.loads((root / "cloud.json").read_text())
            cloud_config |= {"network": openstack_sandbox["network"], "name_prefix": prefix}
            (root / "cloud.json").write_text(json.dumps(cloud_config))
            env = visa_env(tmp_path / "data", port, VISA_CONFIG=str(root / "visa.toml"))

            cli(env, "init")
            cli(env, "clouds", "add", "facility", "--kind", "openstack", "--config", str(root / "cloud.json"))
            catalogue = root / "catalogue"
            cli(env, "catalogue", "apply", str(catalogue / "flavours"), str(catalogue / "images"),
                str(catalogue / "network-rules"))
            cli(env, "experiments", "import", str(root / "export.json"))
            checked = cli(env, "check-config", "--probe-clouds")
            assert f"oidc discovery: {idp.issuer.rstrip('/')}" in checked, checked

            with served(env, port, tmp_path / "visa.log") as url, chromium() as browser:
                allow_errors(rf"127\.0\.0\.1:{urlsplit(idp.base).port}/favicon\.ico")  # the provider's pages
                page = _login(browser, url, idp.issuer, "alice")
                me = page.evaluate("fetch('/api/me').then(r => r.json())")
                assert me["username"] == "alice", me  # the imported account, not alice-2

                page.goto("/instances/new")
                experiment = page.locator('[data-experiment]:has-text("ev280") input[name="experiment"]')
                experiment.check()
                assert experiment.is_checked()
                _seen(page, '#environments [data-image="desktop"]', tmp_path / "visa.log")
                page.click('#environments [data-image="desktop"]')
                page.locator("#flavours [data-plan]").first.wait_for()
                page.click('#flavours [data-plan] >> text=esrf.medium')
                page.fill("#name", "XRF maps")
                page.click('[data-testid="create"]')
                try:
                    page.wait_for_url(re.compile(r"/instances/[0-9a-f]+$"))
                except Exception as exc:
                    raise AssertionError(page.inner_text("main")[:1500]) from exc
                uid = page.url.rstrip("/").rsplit("/", 1)[1]
                _shot(page, "01-created")

                # The server Nova holds for it carries the rule's group (the experiment's beamtime runs).
                deadline = time.monotonic() + 240
                server = None
                while time.monotonic() < deadline:
                    servers = [s for s in admin_conn.compute.servers() if s.name.startswith(prefix)]
                    if servers and servers[0].status == "ACTIVE":
                        server = admin_conn.compute.get_server(servers[0].id)
                        break
                    assert not servers or servers[0].status != "ERROR", servers[0]
                    time.sleep(1)
                assert server is not None, (tmp_path / "visa.log").read_text()[-3000:]
                groups = {g["name"] for g in server.security_groups or []}
                assert control_group in groups, groups

                # irene, id21's instrument scientist by the import, finds it on /support.
                support = _login(browser, url, idp.issuer, "irene")
                me = support.evaluate("fetch('/api/me').then(r => r.json())")
                assert me["username"] == "irene" and "INSTRUMENT_SCIENTIST" in me["roles"], me
                support.goto("/support")
                rows = support.locator("tr[data-support-uid]")
                assert rows.evaluate_all("rs => rs.map(r => r.dataset.supportUid)") == [uid]
                assert "id21" in rows.first.inner_text() and "Alice Liddell" in rows.first.inner_text()
                _shot(support, "02-support")
        log = (tmp_path / "visa.log").read_text()
        assert "Traceback" not in log, log[-3000:]
    finally:
        deadline = time.monotonic() + 120
        while (mine := [s for s in admin_conn.compute.servers() if s.name.startswith(prefix)]) \
                and time.monotonic() < deadline:
            for s in mine:
                with contextlib.suppress(Exception):
                    admin_conn.compute.delete_server(s.id)
            time.sleep(2)
        with contextlib.suppress(Exception):
            admin_conn.network.delete_security_group(group)
        admin_conn.close()
