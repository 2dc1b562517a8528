"""An OpenStack cloud's configuration: typed, checked before it is stored (the key named), and
passed whole to openstacksdk; the provider follows a cloud registered again (fast tier: no
request is made, openstacksdk's connection objects are read)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from visa.actor import SYSTEM
from visa.clouds.openstack import OpenStackProvider
from visa.clouds.openstack_config import parse_config
from visa.clouds.service import register_cloud
from visa.errors import InvalidInput

KEYSTONE = "https://keystone.example.org:5000/v3"
PASSWORD = {"auth_url": KEYSTONE, "username": "visa", "password": {"env": "OS_SECRET"}, "project_name": "visa"}
APPCRED = {"auth_type": "v3applicationcredential", "auth_url": KEYSTONE,
           "application_credential_id": "abc123", "application_credential_secret": "s3cret"}


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({**PASSWORD, "passwrod": "x"}, "config.passwrod"),  # a typo is named, not ignored
        ({**PASSWORD, "auth": {"usernme": "v"}}, "config.auth.usernme"),
        ({**PASSWORD, "placement": {"projet_name": "service"}}, "config.placement.projet_name"),
        ({**PASSWORD, "auth_type": "v3oidc"}, "config.auth_type"),
        ({**PASSWORD, "interface": "private"}, "config.interface"),
        ({**PASSWORD, "password": {"env": ""}}, "config.password"),
        ({**PASSWORD, "password": {"file": "/etc/x"}}, "config.password"),
        ({**PASSWORD, "verify": "perhaps"}, "config.verify"),
        ({**PASSWORD, "security_groups": "default"}, "config.security_groups"),
        ({k: v for k, v in PASSWORD.items() if k != "auth_url"}, "config.auth_url"),
        ({k: v for k, v in PASSWORD.items() if k != "password"}, "config.password"),
        ({k: v for k, v in PASSWORD.items() if k != "project_name"}, "config.project_name"),
        ({**PASSWORD, "auth": {"password": "again"}}, "config.password"),  # twice
        ({k: v for k, v in APPCRED.items() if k != "application_credential_secret"},
         "config.application_credential_secret"),
        ({**APPCRED, "project_name": "visa"}, "config.project_name"),  # a credential is scoped already
        ({**APPCRED, "application_credential_id": None, "application_credential_name": "n"}, "config.username"),
        ({"auth_type": "token", "auth_url": KEYSTONE, "token": "t"}, "config.project_name"),
        ({"clouds_yaml": "/etc/openstack/clouds.yaml"}, "config.cloud"),
        ({"cloud": "site", "auth_type": "v3applicationcredential", "password": "x"}, "config.password"),
        ({**PASSWORD, "placement": {"auth_type": "token"}}, "config.placement.token"),
    ],
)
def test_a_bad_configuration_is_refused_naming_the_key(config: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_config(config)
    assert info.value.field == field, info.value.message
    assert info.value.message.startswith(field)


@pytest.mark.parametrize(
    "config",
    [
        PASSWORD,
        APPCRED,
        {**APPCRED, "application_credential_id": None, "application_credential_name": "visa-prod", "username": "v"},
        {"auth_type": "token", "auth_url": KEYSTONE, "token": {"env": "OS_TOKEN"}, "project_id": "p1"},
        {"auth_type": "v3applicationcredential",
         "auth": {"auth_url": KEYSTONE, "application_credential_id": "a", "application_credential_secret": "s"}},
        {"cloud": "site"},
        {"cloud": "site", "clouds_yaml": "/etc/visa/clouds.yaml", "region_name": "North", "interface": "internal",
         "application_credential_secret": {"env": "OS_SECRET"}},
        # Configurations written before the typed one, retries and all, still load.
        {**PASSWORD, "retries": 3, "backoff": 0.5, "timeout": 10, "reboot_type": "HARD", "network": "auto"},
    ],
)
def test_good_configurations_pass(config: dict[str, Any]) -> None:
    parse_config(config)


def test_the_configuration_reaches_openstacksdk(tmp_path: Path) -> None:
    bundle = tmp_path / "site-ca.pem"
    bundle.write_text("not read before the first request\n")
    provider = OpenStackProvider("site", {**APPCRED, "region_name": "North", "interface": "internal",
                                          "cacert": str(bundle), "timeout": 12})
    conn = provider.conn
    assert conn.config.config["auth_type"] == "v3applicationcredential"
    assert conn.config.config["auth"]["application_credential_id"] == "abc123"
    assert conn.config.get_region_name() == "North" and conn.config.get_interface() == "internal"
    assert conn.session.verify == str(bundle) and float(conn.config.config["api_timeout"]) == 12
    provider.close()

    insecure = OpenStackProvider("site", {**PASSWORD, "password": "p", "verify": False})
    assert insecure.conn.session.verify is False
    assert insecure.conn.config.config["auth"]["user_domain_name"] == "Default"
    insecure.close()


def test_a_clouds_yaml_entry_by_name_with_overrides(tmp_path: Path) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(json.dumps({"clouds": {"site": {
        "auth_type": "v3applicationcredential",
        "auth": {"auth_url": KEYSTONE, "application_credential_id": "from-yaml", "application_credential_secret": "y"},
        "region_name": "South", "interface": "public", "cacert": "/etc/ssl/site-ca.pem",
    }}}))  # JSON is YAML
    provider = OpenStackProvider("site", {"cloud": "site", "clouds_yaml": str(clouds), "interface": "internal",
                                          "application_credential_secret": "from-visa"})
    conn = provider.conn
    assert conn.config.config["auth"]["application_credential_id"] == "from-yaml"
    assert conn.config.config["auth"]["application_credential_secret"] == "from-visa"
    assert conn.config.get_region_name() == "South" and conn.config.get_interface() == "internal"
    assert conn.session.verify == "/etc/ssl/site-ca.pem"
    provider.close()

    missing = OpenStackProvider("site", {"cloud": "nosuch", "clouds_yaml": str(clouds)})
    from visa.errors import CloudError

    with pytest.raises(CloudError) as info:
        missing.limits()
    assert info.value.details["reason"] == "config" and "'nosuch'" in info.value.message
    assert str(clouds) in info.value.message


def test_placement_credentials_of_another_type_replace_the_clouds() -> None:
    cfg = parse_config({**APPCRED, "region_name": "North",
                        "placement": {"auth_type": "password", "username": "cap", "password": "p",
                                      "project_name": "service"}})
    placement = cfg.placement_connection()
    assert placement.auth_type == "password" and placement.region_name == "North"
    assert placement.credentials() == {"auth_url": KEYSTONE, "username": "cap", "password": "p",
                                       "project_name": "service"}
    same = parse_config({**PASSWORD, "user_domain_name": "Site", "placement": {"username": "cap", "password": "p"}})
    assert same.placement_connection().credentials()["user_domain_name"] == "Site"


def test_a_stored_configuration_that_no_longer_passes_fails_each_call_clearly() -> None:
    from visa.errors import CloudError

    provider = OpenStackProvider("old", {**PASSWORD, "password": "p", "flavour_cache": 5})
    with pytest.raises(CloudError) as info:
        provider.list_servers()
    assert info.value.details["reason"] == "config" and "config.flavour_cache: unknown key" in info.value.message


def test_register_refuses_before_storing(db, clock) -> None:
    from sqlalchemy import select

    from visa.clouds.models import Cloud

    with db.unit_of_work() as s, pytest.raises(InvalidInput) as info:
        register_cloud(SYSTEM, s, clock, "site", "openstack", {**PASSWORD, "regoin_name": "North"})
    assert info.value.field == "config.regoin_name"
    with db.sessionmaker() as s:
        assert s.scalar(select(Cloud).where(Cloud.name == "site")) is None


def test_clouds_add_names_the_file_and_key(cli, tmp_path: Path) -> None:
    config = tmp_path / "site.json"
    config.write_text(json.dumps({**APPCRED, "application_credential_secret": {"env": "OS_SECRET"},
                                  "ca_cert": "/etc/ssl/ca.pem"}))
    r = cli("clouds", "add", "site", "--kind", "openstack", "--config", str(config))
    assert r.exit_code != 0 and f"{config}: config.ca_cert: unknown key" in r.output
    config.write_text(json.dumps({**APPCRED, "cacert": "/etc/ssl/ca.pem"}))
    r = cli("clouds", "add", "site", "--kind", "openstack", "--config", str(config))
    assert r.exit_code == 0, r.output


def test_the_provider_follows_a_cloud_registered_again(db, clock, settings, monkeypatch) -> None:
    import visa.services
    from visa.services import Services

    services = Services(settings=settings, database=db, clock=clock)
    with db.unit_of_work() as s:
        register_cloud(SYSTEM, s, clock, "site", "openstack", APPCRED)
    first = services.provider("site")
    assert services.provider("site") is first  # unchanged: reused
    assert first.conn.config.config["auth"]["application_credential_secret"] == "s3cret"

    with db.unit_of_work() as s:  # the secret rotated, as `visa clouds add` on the same name does
        register_cloud(SYSTEM, s, clock, "site", "openstack", {**APPCRED, "application_credential_secret": "n3w"})
    second = services.provider("site")
    assert second is not first
    assert second.conn.config.config["auth"]["application_credential_secret"] == "n3w"  # type: ignore[attr-defined]
    assert first._conn is not None  # a call under way on the old one may finish ...
    monkeypatch.setattr(visa.services, "RETIRE_GRACE_SECONDS", 0.0)
    assert services.provider("site") is second
    assert first._conn is None  # ... and then it is closed
    services.close()
