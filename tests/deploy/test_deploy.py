"""deploy/: nginx accepts its configuration and routes the gateway, the Keycloak realm gives visa's roles,
units serve with the benchmarked websocket protocol."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from visa.users.models import Role

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is required in CI (deploy/system-packages.txt)")
        pytest.skip(f"no {tool}")
    return path


def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    nginx, openssl = _need("nginx"), _need("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=visa.test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    conf = (DEPLOY / "nginx/visa.conf").read_text()
    for kind in ("visa", "visa-content"):
        conf = conf.replace(f"/etc/ssl/{kind}/fullchain.pem", str(cert)).replace(
            f"/etc/ssl/{kind}/privkey.pem", str(key)
        )
    conf = conf.replace("/var/log/nginx/", f"{tmp_path}/")
    (tmp_path / "visa.conf").write_text(conf)
    temp = "\n".join(
        f"  {d}_temp_path {tmp_path}/{d};" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log {tmp_path}/access.log;\n{temp}\n  include {tmp_path}/visa.conf;\n}}\n"
    )
    r = subprocess.run(
        [
            nginx,
            "-t",
            "-p",
            str(tmp_path),
            "-e",
            str(tmp_path / "error.log"),
            "-c",
            str(tmp_path / "nginx.conf"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "syntax is ok" in r.stderr and "test is successful" in r.stderr
    # What the configuration must do for visa, not only parse.
    for needle in (
        "location /ws/",
        "location = /api/events",
        "proxy_buffering off",
        "proxy_read_timeout 8h",
        "$http_upgrade",
        "X-Request-ID",
        "deny all",
        "server_name *.visa-content.example.org;",
        '"$request_method $uri $server_protocol"',
        "client_body_timeout",
        "client_header_timeout",
    ):
        assert needle in conf, needle
    assert "$request_uri" not in conf.split("log_format", 1)[1].split(";", 1)[0]  # no query strings logged


def test_keycloak_realm_roles_map_to_visa_roles() -> None:
    realm = json.loads((DEPLOY / "keycloak/visa-realm.json").read_text())
    client_roles = {r["name"] for r in realm["roles"]["client"]["visa"]}
    example = tomllib.loads((DEPLOY / "visa.example.toml").read_text())
    mapping = example["oidc"]["role_mapping"]
    assert set(mapping) == client_roles
    assert {Role(v) for v in mapping.values()} == set(Role)
    client = next(c for c in realm["clients"] if c["clientId"] == example["oidc"]["client_id"])
    compose = yaml.safe_load((DEPLOY / "compose/compose.yaml").read_text())["x-visa"]["environment"]
    # The example's site, and the Compose stack (its default secret is the realm's).
    assert client["redirectUris"] == [
        example["base_url"] + "/auth/callback",
        compose["VISA_BASE_URL"] + "/auth/callback",
    ]
    assert compose["VISA_OIDC__CLIENT_SECRET"].endswith(f":-{client['secret']}}}")
    assert example["oidc"]["role_claim"] == "resource_access.visa.roles"


def test_units_and_container_serve_the_web_as_wsgi_and_the_gateway_with_the_relays_protocol() -> None:
    web = (DEPLOY / "systemd/visa-web.service").read_text()
    gateway = (DEPLOY / "systemd/visa-gateway.service").read_text()
    entrypoint = (DEPLOY / "container/entrypoint.sh").read_text()
    helm_web = (DEPLOY / "helm/visa/templates/web-deployment.yaml").read_text()
    # The web role: `visa web` (gunicorn's threaded workers, no ASGI) everywhere it is deployed.
    assert "ExecStart=/opt/visa/.venv/bin/visa web " in web and "--bind 127.0.0.1:8080" in web
    assert "exec visa web " in entrypoint and "exec visa web " in helm_web
    web_case = entrypoint.split("  web)", 1)[1].split(";;", 1)[0]
    for text in (web, web_case, helm_web):
        assert "create_asgi_app" not in text and "RelayUvicornWorker" not in text
    assert "-k visa.serving.RelayUvicornWorker" in gateway and "'visa.asgi:create_gateway_app()'" in gateway
    assert "--bind 127.0.0.1:8081" in gateway
    assert (
        "ExecStart=/opt/visa/.venv/bin/visa scheduler"
        in (DEPLOY / "systemd/visa-scheduler.service").read_text()
    )
    for text in (web, gateway, entrypoint, (DEPLOY / "container/Containerfile").read_text()):
        assert "uvicorn.workers" not in text  # deprecated: uvicorn-worker's class instead
    assert entrypoint.count("-k visa.serving.RelayUvicornWorker") == 1
    assert "create_gateway_app()" in entrypoint


def test_nginx_sends_event_streams_to_the_gateway_and_no_kept_alive_connection_to_the_web() -> None:
    for path in ("nginx/visa.conf", "compose/nginx.conf"):
        conf = (DEPLOY / path).read_text()
        events = conf.split("location = /api/events", 1)[1].split("}", 1)[0]
        assert "proxy_pass http://visa_gateway;" in events and "proxy_buffering off;" in events, path
        web = conf.split("upstream visa_web {", 1)[1].split("}", 1)[0]
        assert not any(line.strip().startswith("keepalive") for line in web.splitlines()), path


def test_the_worker_class_runs_the_benchmarked_websocket_protocol() -> None:
    """gunicorn's worker gives uvicorn the options bench/gateway.py measures."""
    from uvicorn import Config

    from visa.serving import UVICORN_OPTIONS, RelayUvicornWorker

    options = RelayUvicornWorker.CONFIG_KWARGS
    assert options["ws"] == "visa.gateway.wsprotocol:RelayWebSocketProtocol"
    assert options["ws_per_message_deflate"] is False
    assert UVICORN_OPTIONS.items() <= options.items()
    config = Config(app=lambda *_: None, **options)
    config.load()
    from visa.gateway.wsprotocol import RelayWebSocketProtocol

    assert config.ws_protocol_class is RelayWebSocketProtocol


def test_nginx_routes_the_gateway_and_limits_logins() -> None:
    conf = (DEPLOY / "nginx/visa.conf").read_text()
    main, content = conf.split("server_name *.visa-content.example.org;\n\n", 1)
    ws = main.split("location /ws/ {", 1)[1].split("}", 1)[0]
    assert "proxy_pass http://visa_gateway;" in ws
    assert "proxy_pass http://visa_web;" not in content and "proxy_pass http://visa_gateway;" in content
    # What visa/auth/ratelimit.py relies on: one replica per address and a shared login limit.
    assert "hash $binary_remote_addr consistent;" in conf.split("upstream visa_web {", 1)[1].split("}", 1)[0]
    assert "limit_req_zone $visa_login_key zone=visa_login:10m rate=30r/m;" in conf
    login = main.split("location ~ ^/(login|api/login|auth/callback|api/tokens)$ {", 1)[1].split("}", 1)[0]
    assert "limit_req zone=visa_login" in login


def test_the_asgi_factories_are_importable_as_the_units_name_them() -> None:
    from visa.asgi import create_asgi_app, create_gateway_app

    assert callable(create_asgi_app) and callable(create_gateway_app)


@pytest.mark.integration
def test_the_container_web_stage_builds_from_a_clean_copy(tmp_path: Path) -> None:
    """What the Containerfile's web stage does, without a container engine (none runs here):
    the two build scripts and web/ alone, without node_modules, produce every served asset."""
    text = (DEPLOY / "container/Containerfile").read_text()
    assert "COPY web ./web" in text and "RUN scripts/build-web.sh && scripts/build-apidocs.sh" in text
    assert "COPY --from=web /src/visa/static ./visa/static" in text
    (tmp_path / "scripts").mkdir()
    for script in ("build-web.sh", "build-apidocs.sh"):
        shutil.copy2(ROOT / "scripts" / script, tmp_path / "scripts" / script)
    shutil.copytree(ROOT / "web", tmp_path / "web", ignore=shutil.ignore_patterns("node_modules"))
    for script in ("build-web.sh", "build-apidocs.sh"):
        subprocess.run([str(tmp_path / "scripts" / script)], check=True, capture_output=True, timeout=600)
    static = tmp_path / "visa" / "static"
    for asset in (
        "js/app.js",
        "css/visa.css",
        "vendor/novnc/core/rfb.js",
        "admin",
        "vendor/swagger-ui/swagger-ui-bundle.js",
    ):
        assert (static / asset).exists(), asset
