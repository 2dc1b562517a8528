"""The Compose file and the Helm chart, checked with tools from the registries:
``docker-compose config`` (Debian's docker-compose), Helm's own linter and renderer (the
``helm-python-sdk`` wheel embeds Helm's Go library: ``helm lint --strict`` and
``helm template``), the rendered manifests against the Kubernetes API schemas that
``kubernetes-validate`` ships, and the settings both hand to visa against visa's Settings."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from visa.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy/compose"
CHART = ROOT / "deploy/helm/visa"
KUBERNETES = "1.30.0"
VALUES = {
    "secrets": {"secretKey": "k" * 40},
    "database": {"url": "postgresql+psycopg://visa@db.example.org/visa"},
}
VISA_SERVICES = {"migrate", "web-1", "web-2", "gateway", "scheduler-1", "scheduler-2"}


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is required in CI (deploy/system-packages.txt)")
        pytest.skip(f"no {tool}")
    return path


def _settings_from_env(env: dict[str, str], tmp_path: Path) -> Settings:
    visa_env = {
        k: v for k, v in env.items() if k.startswith("VISA_") and k not in ("VISA_ROLE", "VISA_WORKERS")
    }
    old = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("VISA_")]:
            del os.environ[key]
        os.environ.update(visa_env, VISA_DATA_DIR=str(tmp_path))
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_compose_runs_the_whole_stack(tmp_path: Path) -> None:
    compose = _need("docker-compose")
    env = {**os.environ, "VISA_SECRET_KEY": "s" * 40}
    r = subprocess.run([compose, "-f", str(COMPOSE / "compose.yaml"), "config"], env=env, capture_output=True,
                       text=True, timeout=120, cwd=COMPOSE)  # fmt: skip
    assert r.returncode == 0, r.stderr
    services = yaml.safe_load(r.stdout)["services"]
    assert set(services) == VISA_SERVICES | {"postgres", "keycloak", "nginx"}
    for name in VISA_SERVICES:
        settings = _settings_from_env(services[name]["environment"], tmp_path)
        assert settings.gateway.embedded is False and settings.scheduler.enabled_in_web is False, name
        assert settings.sqlalchemy_url.startswith("postgresql"), name
    assert services["gateway"]["environment"]["VISA_ROLE"] == "gateway"
    assert services["scheduler-1"]["command"] == ["visa", "scheduler"]
    assert services["migrate"]["command"] == ["visa", "db", "upgrade"]
    assert services["web-1"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # Without the shared secret the stack refuses to start rather than generate one per process.
    r = subprocess.run([compose, "-f", str(COMPOSE / "compose.yaml"), "config"], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != "VISA_SECRET_KEY"}, timeout=120, cwd=COMPOSE)  # fmt: skip
    assert r.returncode != 0 and "VISA_SECRET_KEY" in r.stderr


def test_compose_nginx_is_accepted_by_nginx(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("no nginx")
    conf = (COMPOSE / "nginx.conf").read_text()
    for host, port in (("web-1", 8080), ("web-2", 8080), ("gateway", 8081)):  # nginx -t resolves names
        conf = conf.replace(f"server {host}:{port}", f"server 127.0.0.1:{port}")
    conf = conf.replace("/var/log/nginx/", f"{tmp_path}/").replace("listen 80", "listen 127.0.0.1:1")
    (tmp_path / "visa.conf").write_text(conf)
    temp = "\n".join(
        f"  {d}_temp_path {tmp_path}/{d};" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log {tmp_path}/access.log;\n{temp}\n  include {tmp_path}/visa.conf;\n}}\n"
    )
    r = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c",
                        str(tmp_path / "nginx.conf")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "location /ws/ {\n        proxy_pass http://visa_gateway;" in conf
    assert "limit_req zone=visa_login" in conf


def _helm():
    try:
        import helm_python
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("helm-python-sdk is a test dependency (pyproject.toml)")
        pytest.skip("no helm-python-sdk")
    return helm_python


def test_helm_lint_passes_strict_and_refuses_bad_values() -> None:
    helm = _helm()
    report = helm.lint(str(CHART), VALUES, strict=True, kube_version=f"v{KUBERNETES}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1 and not report["errors"] and not problems, report
    # values.schema.json is enforced by the linter: a wrong type and an unknown key are errors.
    for bad in ({**VALUES, "web": {"replicas": "two", "workers": 2}}, {**VALUES, "gatway": {}}):
        report = helm.lint(str(CHART), bad, strict=True)
        assert report["errors"], bad
    with pytest.raises(helm.errors.HelmError, match="secretKey"):
        helm.Chart.load(str(CHART)).render({"database": VALUES["database"]}, name="visa", namespace="visa")


def test_helm_manifests_are_valid_kubernetes_and_give_visa_valid_settings(tmp_path: Path) -> None:
    helm = _helm()
    import kubernetes_validate

    values = {**VALUES, "config": {"log_json": True, "oidc": {"server_url": "https://sso.example.org/"}}}
    rendered = helm.Chart.load(str(CHART)).render(values, name="visa", namespace="visa", is_install=True)
    kinds: dict[str, dict] = {}
    for path, text in rendered.items():
        if not path.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                kubernetes_validate.validate(doc, KUBERNETES, strict=True)
                kinds[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    assert {"Deployment/visa-web", "Deployment/visa-gateway", "Deployment/visa-scheduler", "Service/visa-web",
            "Service/visa-gateway", "Ingress/visa", "ConfigMap/visa-config", "Secret/visa-secrets",
            "PodDisruptionBudget/visa-web"} <= set(kinds)  # fmt: skip
    assert kinds["Deployment/visa-web"]["spec"]["replicas"] == 2
    assert kinds["Deployment/visa-scheduler"]["spec"]["replicas"] == 2
    assert any(k.startswith("Job/visa-migrate-") for k in kinds)
    gateway = kinds["Deployment/visa-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert (
        "visa.serving.RelayUvicornWorker" in gateway["args"][0]
        and "create_gateway_app()" in gateway["args"][0]
    )
    web = kinds["Deployment/visa-web"]["spec"]["template"]["spec"]["containers"][0]
    assert "exec visa web --workers 2 --threads 8 " in web["args"][0]
    rules = {r["host"]: r["http"]["paths"] for r in kinds["Ingress/visa"]["spec"]["rules"]}
    assert {p["path"]: p["backend"]["service"]["name"] for p in rules["visa.example.org"]} == {
        "/ws/": "visa-gateway", "/api/events": "visa-gateway", "/": "visa-web"}  # fmt: skip
    assert rules["*.visa-content.example.org"][0]["backend"]["service"]["name"] == "visa-gateway"
    # The settings file the pods read is one visa accepts, as the chart means it.
    config = tomllib.loads(kinds["ConfigMap/visa-config"]["data"]["visa.toml"])
    settings = Settings(**config, secret_key="k" * 40)
    assert settings.gateway.embedded is False and settings.scheduler.enabled_in_web is False
    assert settings.scheduler.metrics_port == 9464 and settings.oidc.server_url == "https://sso.example.org/"
    assert settings.database_pool.size == 5


# Helm's install order of kinds (pkg/releaseutil/kind_sorter.go, InstallOrder; the docs' "order
# Helm installs resources"). Hooks of one event run sorted by weight, then kind in this order,
# then name; each is created and, for a Job, waited for until it completes. When they all
# succeeded, those with the delete policy hook-succeeded are deleted; then the release's own
# resources are created in this order.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
    "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
    "PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole", "ClusterRoleList",
    "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList",
    "Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment", "HorizontalPodAutoscaler",
    "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
]  # fmt: skip


def _docs(values: dict) -> list[dict]:
    rendered = _helm().Chart.load(str(CHART)).render(values, name="visa", namespace="visa", is_install=True)
    return [
        d for path, text in rendered.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d
    ]


def _needs(doc: dict) -> set[tuple[str, str]]:
    """The objects ``doc`` uses when it is created: its pods' ConfigMaps, Secrets and service
    account, an Ingress's Services (its TLS secrets are the certificate manager's)."""
    needs: set[tuple[str, str]] = set()
    if doc["kind"] == "Ingress":
        for rule in doc["spec"]["rules"]:
            needs |= {("Service", p["backend"]["service"]["name"]) for p in rule["http"]["paths"]}
        return needs
    pod = doc.get("spec", {}).get("template", {}).get("spec")
    if pod is None:
        return needs
    if pod.get("serviceAccountName"):
        needs.add(("ServiceAccount", pod["serviceAccountName"]))
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            needs.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            needs.add(("Secret", volume["secret"]["secretName"]))
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        for source in container.get("envFrom", []):
            for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if key in source and not source[key].get("optional"):
                    needs.add((kind, source[key]["name"]))
        for var in container.get("env", []):
            for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                ref = var.get("valueFrom", {}).get(key)
                if ref and not ref.get("optional"):
                    needs.add((kind, ref["name"]))
    return needs


def _walk_first_install(docs: list[dict], external: set[tuple[str, str]]) -> list[str]:
    """Helm's first install, step by step; fails at the first object that uses one not there yet."""

    def hooks_of(doc: dict) -> list[str]:
        return [
            h.strip() for h in doc["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(",") if h
        ]

    for doc in docs:
        assert doc["kind"] in INSTALL_ORDER, f"{doc['kind']}: Helm would install it last, after everything"
    rank = INSTALL_ORDER.index
    hooks = sorted(
        (d for d in docs if "pre-install" in hooks_of(d)),
        key=lambda d: (
            int(d["metadata"]["annotations"].get("helm.sh/hook-weight", "0")),
            rank(d["kind"]),
            d["metadata"]["name"],
        ),
    )
    release = sorted((d for d in docs if not hooks_of(d)), key=lambda d: rank(d["kind"]))
    exists, steps = set(external), []
    for phase, batch in (("pre-install hook", hooks), ("resource", release)):
        for doc in batch:
            key = (doc["kind"], doc["metadata"]["name"])
            missing = _needs(doc) - exists
            assert not missing, f"{phase} {key} uses {sorted(missing)} before it exists (done: {steps})"
            exists.add(key)
            steps.append(f"{doc['kind']}/{doc['metadata']['name']}")
        if phase == "pre-install hook":
            exists -= {
                (d["kind"], d["metadata"]["name"])
                for d in hooks
                if "hook-succeeded" in d["metadata"]["annotations"].get("helm.sh/hook-delete-policy", "")
            }
    return steps


def test_helm_first_install_creates_what_each_object_uses_before_it() -> None:
    _helm()
    steps = _walk_first_install(_docs(VALUES), external=set())
    job = next(s for s in steps if s.startswith("Job/visa-migrate-"))
    assert (
        steps.index("ConfigMap/visa-migrate-config") < steps.index(job) < steps.index("Deployment/visa-web")
    )
    # A site's own secrets exist before the chart: the migration uses them as the pods do.
    site = {**VALUES, "secrets": {"existingSecret": "site-secrets"},
            "database": {"existingSecret": "site-database"}}  # fmt: skip
    docs = _docs(site)
    assert not any(d["kind"] == "Secret" for d in docs)
    _walk_first_install(docs, external={("Secret", "site-secrets"), ("Secret", "site-database")})
    # Without the migration hook, nothing but the release's own resources.
    _walk_first_install(_docs({**VALUES, "migrate": {"enabled": False}}), external=set())


def _route(ingresses: list[dict], host: str, path: str) -> tuple[dict, str]:
    """The Ingress and the service Kubernetes' path matching picks for ``host`` and ``path``:
    an Exact path equal to it, else the longest Prefix path whose elements start it."""
    best: tuple[int, dict, str] | None = None
    for ingress in ingresses:
        for rule in ingress["spec"]["rules"]:
            if rule["host"] != host:
                continue
            for p in rule["http"]["paths"]:
                prefix = p["path"].rstrip("/")
                if p["pathType"] == "Exact":
                    score = 10**6 if path == p["path"] else -1
                else:
                    score = (
                        len(prefix) if path == prefix or path.startswith(prefix + "/") or not prefix else -1
                    )
                if score >= 0 and (best is None or score > best[0]):
                    best = (score, ingress, p["backend"]["service"]["name"])
    assert best is not None, f"no ingress path for {host}{path}"
    return best[1], best[2]


def test_helm_ingress_refuses_metrics_and_limits_logins_as_the_nginx_file() -> None:
    import ipaddress

    _helm()
    ingresses = [d for d in _docs(VALUES) if d["kind"] == "Ingress"]
    host = "visa.example.org"
    for path in ("/metrics", "/metrics/anything"):
        ingress, _ = _route(ingresses, host, path)
        ranges = (
            ingress["metadata"]
            .get("annotations", {})
            .get("nginx.ingress.kubernetes.io/whitelist-source-range")
        )
        assert ranges, f"{path} is served to every address by {ingress['metadata']['name']}"
        assert all(ipaddress.ip_network(r.strip()).is_loopback for r in ranges.split(",")), ranges
    nginx_paths = re.search(r"location ~ \^/\(([^)]+)\)\$", (ROOT / "deploy/nginx/visa.conf").read_text())
    assert nginx_paths is not None
    rate = re.search(r"rate=(\d+)r/m", (ROOT / "deploy/nginx/visa.conf").read_text())
    for path in ("/" + p for p in nginx_paths.group(1).split("|")):
        ingress, service = _route(ingresses, host, path)
        annotations = ingress["metadata"].get("annotations", {})
        assert service == "visa-web", path
        assert annotations.get("nginx.ingress.kubernetes.io/limit-rpm") == rate.group(1), (
            f"{path}: no login limit"
        )
    for path in ("/", "/instances", "/api/instances", "/login/oidc"):
        ingress, service = _route(ingresses, host, path)
        assert service == "visa-web" and "nginx.ingress.kubernetes.io/limit-rpm" not in ingress[
            "metadata"
        ].get("annotations", {}), path
    assert _route(ingresses, host, "/ws/desktop/x")[1] == "visa-gateway"


def test_helm_values_schema_names_the_key_of_a_wrong_type() -> None:
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = {**yaml.safe_load((CHART / "values.yaml").read_text()), **VALUES}
    jsonschema.Draft7Validator(schema).validate(defaults)
    cases = {
        ("web", "replicas"): {**defaults, "web": {**defaults["web"], "replicas": "two"}},
        ("ingress", "loginLimitPerMinute"): {**defaults, "ingress": {**defaults["ingress"], "loginLimitPerMinute": "30"}},
        ("ingress", "metricsAllowFrom"): {**defaults, "ingress": {**defaults["ingress"], "metricsAllowFrom": "10.0.0.0/8"}},
        ("database", "pool", "size"): {**defaults, "database": {**defaults["database"], "pool": {"size": 1.5}}},
    }  # fmt: skip
    helm = _helm()
    for key, values in cases.items():
        errors = list(jsonschema.Draft7Validator(schema).iter_errors(values))
        assert [tuple(e.absolute_path) for e in errors] == [key], (key, [e.message for e in errors])
        # Helm itself refuses it and names the key.
        report = helm.lint(str(CHART), values, strict=True)
        assert report["errors"] and key[-1] in str(report["errors"]) + str(report["messages"]), report
