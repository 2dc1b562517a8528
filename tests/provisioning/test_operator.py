"""What `visa instances render-userdata UID` prints: the user-data with its secrets masked."""

from __future__ import annotations

import pytest

from tests.provisioning.cloudinit import validate
from tests.provisioning.factories import SECRET, make_experiment, make_image, make_instance, make_user
from visa.errors import NotFound
from visa.instances.spec import render_for_operator
from visa.settings import ProvisioningSettings


def test_operator_sees_user_data_with_secrets_masked(session, tmp_path) -> None:
    owner = make_user(session, uid_number=1000, gid_number=1000)
    image = make_image(
        session, "desktop", [{"protocol": "VNC", "port": 5901}, {"protocol": "JUPYTER", "port": 8888}]
    )
    instance = make_instance(session, owner, image, [make_experiment(session, members=[owner])])
    text = render_for_operator(session, instance.uid, ProvisioningSettings())
    assert SECRET not in text
    assert text.count("********") == 3  # VNC password file, Jupyter token and SSH host key
    assert "PRIVATE KEY" not in text
    validate(text, tmp_path)


def test_unknown_instance(session) -> None:
    with pytest.raises(NotFound) as err:
        render_for_operator(session, "nope" * 50, ProvisioningSettings())
    assert err.value.field == "uid" and len(err.value.message) < 80
