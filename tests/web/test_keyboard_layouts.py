"""The create page offers only keyboard layouts that the API accepts and the machine renders."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from tests.factories import make_cloud, make_flavour, make_image, make_plan, make_user
from visa.catalogue.models import Protocol
from visa.db import Database
from visa.instances.schemas import CreateInstance
from visa.provisioning import names


def test_every_offered_layout_is_accepted_and_rendered(app, db: Database, clock, api_client) -> None:
    with db.unit_of_work() as s:
        make_cloud(s, clock)
        make_user(s, clock, "alice", password="alice-pw")
        image = make_image(s, "desktop", {Protocol.VNC: 5901})
        plan_id = make_plan(s, image, make_flavour(s, "m"), preset=True).id
    c = api_client()
    assert c.login("alice", "alice-pw").status_code == 200
    page = c.get("/instances/new").get_data(as_text=True)
    select = re.search(r'<select id="keyboard"[^>]*>(.*?)</select>', page, re.S).group(1)
    offered = re.findall(r'<option value="([^"]+)"', select)
    assert len(offered) >= 10 and "en-us" in offered
    for code in offered:
        CreateInstance(name="x", plan_id=plan_id, keyboard_layout=code)
        layout, variant = names.keyboard(code)
        assert re.fullmatch(r"[a-z]{2}", layout) and variant in ("", "fr"), code
    assert names.keyboard("fr-ch") == ("ch", "fr") and names.keyboard("de-ch") == ("ch", "")
    assert names.keyboard("de-de") == ("de", "") and names.keyboard("ja-jp") == ("jp", "")


@pytest.mark.parametrize("value", ["fr", "de", "ch-fr", "xx-yy", "fr-fr-azerty"])
def test_layouts_not_offered_are_refused_at_creation(value: str) -> None:
    with pytest.raises(ValidationError, match="keyboard"):
        CreateInstance(name="x", plan_id=1, keyboard_layout=value)
