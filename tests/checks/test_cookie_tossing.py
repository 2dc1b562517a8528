"""`check-config` warns when instances' web content is served from visa's own site: a page there
may set cookies for the whole registrable domain, visa's host included (cookie tossing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from visa.checks import check_settings, registrable_domain
from visa.settings import Settings


@pytest.mark.parametrize(("host", "site"), [
    ("visa.esrf.fr", "esrf.fr"),
    ("a.b.visa.example.org", "example.org"),
    ("visa.ill.ac.uk", "ill.ac.uk"),
    ("visa.diamond.ac.uk", "diamond.ac.uk"),
    ("content.ansto.gov.au", "ansto.gov.au"),
    ("visa.kek.co.jp", "kek.co.jp"),
    ("ac.uk", None),  # a public suffix has no site of its own
    ("instances.localhost", "instances.localhost"),
    ("localhost", None),
    ("127.0.0.1", "127.0.0.1"),
    ("::1", "::1"),
    ("visa-content.example.net:8443", "example.net"),
])
def test_registrable_domain(host: str, site: str | None) -> None:
    assert registrable_domain(host) == site


def _findings(tmp_path: Path, base_url: str, content: str | None) -> list[str]:
    settings = Settings(data_dir=tmp_path, base_url=base_url, user_content_domain=content,
                        session_cookie_secure=base_url.startswith("https"))
    return [f"{f.level} {f.message}" for f in check_settings(settings) if f.subject == "user_content_domain"]


def test_content_domain_on_visas_site_is_warned(tmp_path: Path) -> None:
    for base, content in [("https://visa.esrf.fr", "visa-content.esrf.fr"),
                          ("https://visa.ill.ac.uk", "instances.ill.ac.uk:8443"),
                          ("https://visa.ess.eu", "lab.visa.ess.eu")]:
        found = _findings(tmp_path, base, content)
        assert any(f.startswith("warning") and "cookie" in f for f in found), (base, found)
    for base, content in [("https://visa.esrf.fr", "visa-content.esrf-instances.fr"),
                          ("https://visa.ill.ac.uk", "instances.ill-content.ac.uk"),
                          ("http://127.0.0.1:8080", None)]:
        found = _findings(tmp_path, base, content)
        assert found and all(f.startswith("ok") for f in found), (base, found)
