"""`visa check-config --probe-clouds` on the OpenStack sandbox's real Keystone: a wrong secret is one
clear error line naming the cloud, not a traceback; the right one answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.clouds.conftest import (  # noqa: F401 (fixtures)
    Credentials,
    application_credentials,
    openstack_sandbox,
    run_prefix,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # the sandbox needs PostgreSQL anyway
def test_a_wrong_secret_is_a_clear_probe_error(cli, application_credentials: Credentials,  # noqa: F811
                                               tmp_path: Path) -> None:
    assert cli("init").exit_code == 0
    cred = application_credentials.new("probe")
    for name, secret in (("wrong", "not-the-secret"), ("right", None)):
        config = tmp_path / f"{name}.json"
        config.write_text(json.dumps(application_credentials.config(cred, secret)))
        assert cli("clouds", "add", name, "--kind", "openstack", "--config", str(config)).exit_code == 0
    r = cli("check-config", "--probe-clouds")  # the fixture fails the test on any traceback
    assert r.exit_code == 1
    lines = r.output.splitlines()
    wrong = [line for line in lines if line.startswith("error") and "cloud wrong:" in line]
    assert len(wrong) == 1 and "refused visa's credentials" in wrong[0], r.output
    assert any(line.startswith("ok") and "cloud right: answers" in line for line in lines), r.output
