"""The clipboard's URL check (web/src/js/clipboard-url.js), run under node exactly as the
desktop page runs it. The remote desktop is hostile: every string here is one it could put
in its clipboard to get the user's browser to open something other than an allowed site."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.browser import ROOT

MODULE = ROOT / "web" / "src" / "js" / "clipboard-url.js"
HOSTS = ["doi.org", "*.esrf.fr"]

HOSTILE = [
    "javascript:alert(document.cookie)",
    "JavaScript:alert(1)//https://doi.org/",
    " javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "http://doi.org/10.1000/182",  # not https
    "ftp://doi.org/x",
    "//doi.org/10.1000/182",  # scheme-relative
    "doi.org/10.1000/182",
    "https://evil.example/",
    "https://doi.org.evil.example/",
    "https://evildoi.org/",
    "https://esrf.fr.evil.example/",
    "https://esrf.fr/",  # *.esrf.fr is the subdomains
    "https://notesrf.fr/",
    "https://doi.org@evil.example/",
    "https://doi.org:pass@evil.example/",
    "https://user@doi.org/",
    "https://evil.example\\@doi.org/",
    "https://evil.example\\.doi.org/",
    "https://doi.org%2eevil.example/",
    "https://doi%2Eorg/",
    "https://doi.org:8443/",
    "https://doi.org:/x",
    "https://doi.org./",
    "https://[::1]/",
    "https://127.0.0.1/",
    "https://0x7f000001/",
    "https://d\u043ei.org/",  # Cyrillic o
    "https://xn--di-lmc.org/",  # its punycode: not the allowed name
    "https://www.\u0435srf.fr/",  # Cyrillic e
    "https://doi.org/\u202egnp.exe",  # right-to-left override
    "https://doi.org/a\u200bb",  # zero-width space
    "https://doi.org/\x00",
    "https://doi.org/a\tb",
    "https://doi.org/a b",
    "https://doi.org/\x1b[31m",
    "https://doi.org/\x7f",
    "https://doi.org/x\nhttps://evil.example/",
    "https://doi.org/" + "a" * 3000,
    "",
    "   ",
    "https://",
    "https:///doi.org/",
    "https:doi.org/x",
]

OFFERED = {
    "https://doi.org/10.1000/182": "https://doi.org/10.1000/182",
    "https://doi.org": "https://doi.org/",
    "HTTPS://DOI.ORG/10.1000/ABC": "https://doi.org/10.1000/ABC",
    "https://doi.org:443/x?y=1#z": "https://doi.org/x?y=1#z",
    "https://data.esrf.fr/doi/10.15151/ESRF-ES-1\n": "https://data.esrf.fr/doi/10.15151/ESRF-ES-1",
    "https://a.b.esrf.fr/x%20y": "https://a.b.esrf.fr/x%20y",
}


def _check(texts: list[str], hosts: list[str], max_chars: int = 2048) -> list[str | None]:
    if not shutil.which("node"):
        pytest.skip("node is not installed")
    script = (
        f"import {{ offerableUrl }} from {json.dumps(MODULE.as_uri())};\n"
        "let input = ''; process.stdin.on('data', (d) => { input += d; });\n"
        "process.stdin.on('end', () => { const a = JSON.parse(input);\n"
        "  process.stdout.write(JSON.stringify(a.texts.map((t) => offerableUrl(t, a.hosts, a.max)))); });\n"
    )
    r = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=30,
                       input=json.dumps({"texts": texts, "hosts": hosts, "max": max_chars}))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_hostile_clipboard_texts_are_never_offered() -> None:
    got = _check(HOSTILE, HOSTS)
    offered = {text: url for text, url in zip(HOSTILE, got, strict=True) if url is not None}
    assert offered == {}


def test_plain_https_urls_of_allowed_hosts_are_offered_as_the_browser_opens_them() -> None:
    texts = list(OFFERED)
    assert dict(zip(texts, _check(texts, HOSTS), strict=True)) == OFFERED


def test_nothing_is_offered_without_an_allow_list_or_over_the_length_limit() -> None:
    assert _check(["https://doi.org/x"], []) == [None]
    url = "https://doi.org/" + "a" * 40
    assert _check([url, url], HOSTS, max_chars=len(url)) == [url, url]
    assert _check([url + "b"], HOSTS, max_chars=len(url)) == [None]
