"""Email templates: visa's own render with every variable they use; a facility replaces them file
by file (``mail.templates_dir``), and `visa check-config` names the file and the variable of a
replacement that uses one visa does not give; every email carries the facility's name and contact."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

import visa.bookings.emails
import visa.instances.emails  # noqa: F401  (the kinds, with their variables)
from tests.services import Inbox, add_instance
from visa.checks import check_face
from visa.clock import FrozenClock
from visa.instances import lifecycle
from visa.mail.outbox import SAMPLES, deliver
from visa.mail.render import TEMPLATES, check_templates, common_context, render
from visa.services import Services
from visa.settings import Settings


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_of_visa_s_templates_renders_with_its_variables(name: str) -> None:
    settings = Settings(site={"name": "ESRF VISA", "contact_email": "visa@esrf.example"})
    out = render(name, {**common_context(settings), **SAMPLES[name]})  # StrictUndefined: none missing
    assert out.subject and ("glass-analysis" in out.subject + out.text or "esrf.gpu.a40" in out.subject + out.text)
    assert "ESRF VISA" in out.text and "visa@esrf.example" in out.text
    assert "ESRF VISA" in out.html and 'href="mailto:visa@esrf.example"' in out.html


def test_the_samples_give_every_variable_visa_s_templates_use() -> None:
    # visa's own directory, checked as a facility's would be: each file, each variable.
    assert check_templates(TEMPLATES, SAMPLES, common_context(Settings())) == []


def _facility(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "mail"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_a_facility_s_broken_templates_are_named_with_file_and_variable(tmp_path: Path) -> None:
    common = common_context(Settings())
    folder = _facility(tmp_path, {"member_added.txt": "Subject: Hi {{ member.username }}\n{{ greeting }} {{ site.name }}\n"})
    [problem] = check_templates(folder, SAMPLES, common)
    assert problem.startswith(f"{folder / 'member_added.txt'}: variable 'greeting' is not given to this template")
    assert "member, owner, role, site, url" in problem

    (folder / "member_added.txt").write_text("Subject: Hi\n{{ instance.owner_phone }}\n")
    [problem] = check_templates(folder, SAMPLES, common)
    assert problem.startswith(f"{folder / 'member_added.txt'}: ") and "owner_phone" in problem

    (folder / "member_added.txt").write_text("Hi {{ member.username }}\n")
    assert check_templates(folder, SAMPLES, common) == [
        f"{folder / 'member_added.txt'}: the first line must be 'Subject: ...'"]

    (folder / "member_added.txt").write_text("Subject: x\n{% if role %}\n")
    [problem] = check_templates(folder, SAMPLES, common)
    assert problem.startswith(f"{folder / 'member_added.txt'}: line 2: ")

    (folder / "member_added.txt").unlink()
    (folder / "welcome.txt").write_text("Subject: x\n")
    [problem] = check_templates(folder, SAMPLES, common)
    assert problem.startswith(f"{folder / 'welcome.txt'}: replaces none of visa's email templates")

    (folder / "welcome.txt").unlink()
    (folder / "_base.html").write_text("<p>{{ url }}</p>{% block body %}{% endblock %}")  # not every email has one
    [problem] = check_templates(folder, SAMPLES, common)
    assert problem.startswith(f"{folder / '_base.html'}: variable 'url' is not given")

    settings = Settings(mail={"templates_dir": folder})
    assert [(f.level, f.subject) for f in check_face(settings)] == [("error", "mail.templates_dir")]


def test_a_facility_s_templates_and_face_reach_the_inbox(services: Services, world, clock: FrozenClock, inbox: Inbox,
                                                         tmp_path: Path) -> None:
    folder = _facility(tmp_path, {
        "inactivity_warning.txt": "Subject: [{{ site.name }}] {{ instance.name }} is idle\n"
                                  "Dear {{ owner.full_name or owner.username }}, see {{ url }}\n",
    })
    site, mail = services.settings.site, services.settings.mail
    services.settings.site = Settings(site={"name": "ESRF VISA", "contact_email": "visa@esrf.example"}).site
    services.settings.mail = Settings(mail={"templates_dir": folder}).mail
    try:
        assert [(f.level, f.subject) for f in check_face(services.settings)] == [("ok", "mail.templates_dir")]
        with services.database.unit_of_work() as s:
            then = clock.now() - timedelta(days=3.5)
            add_instance(s, clock, world, created_at=then, last_seen_at=then)
        assert lifecycle.run(services).inactivity_warned
        deliver(services.database.sessionmaker, services.settings, clock)
        [message] = inbox.wait_for_kind("inactivity_warning")
    finally:
        services.settings.site, services.settings.mail = site, mail
    assert message["Subject"].startswith("[ESRF VISA] ")
    assert message["From"].addresses[0].display_name == "ESRF VISA" and message["Reply-To"] == "visa@esrf.example"
    text = message.get_body(("plain",)).get_content()
    assert text.startswith("Dear ")  # the facility's replacement
    html = message.get_body(("html",)).get_content()
    assert "ESRF VISA" in html and "visa@esrf.example" in html  # visa's own, with the facility's face
