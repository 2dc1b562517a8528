"""The instance page's files, settings and the desktop's clipboard links, in a real headless
Chromium against a real visa (uvicorn, the local cloud with its sandboxed session account).

One site and one running session for the module: upload through the page (in chunks, one
request broken on purpose and resumed) lands byte-identical in the session's home, a file
written inside the session downloads byte-identical, folders are browsed, the owner edits
the instance's settings with errors shown by field, and a URL copied inside the desktop is
offered for one click only when it is a plain https URL of an allowed host.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import Site, allow_errors, chromium, cli, local_site
from tests.web.test_browser import _find, create_desktop, login, shot

pytestmark = pytest.mark.integration

URL_HOSTS = ["doi.org", "*.esrf.fr"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if os.geteuid() != 0:
        pytest.skip("the session's own account needs root")

    def people(env: dict[str, str]) -> None:
        cli(env, "users", "add", "alice", "--full-name", "Alice Martin", "--password", "alice-password")

    with local_site(tmp_path_factory.mktemp("visa-files") / "var", "browser-files-secret", [
        {"id": "ev280-id21-1", "proposal": "ev280", "proposal_title": "Trace elements in Roman glass",
         "instrument": "id21", "start_date": "2026-11-20", "end_date": "2026-11-23", "title": "XRF mapping",
         "members": [{"username": "alice", "full_name": "Alice Martin"}]},
    ], dirs=("visitor/ev280/id21", "processed/ev280/id21"), people=people,
       VISA_CLIPBOARD__URL_HOSTS=json.dumps(URL_HOSTS)) as s:
        yield s


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def running(site: Site, browser) -> Iterator[dict[str, Any]]:
    """Alice's instance, made through the wizard and running; her page, and the session's cloud."""
    from visa.clouds.registry import make_provider

    ctx, page = login(browser, site, "alice")
    uid = create_desktop(page, "files of ev280")  # her only experiment is chosen already
    # The page was opened while the machine was building: its files open as it comes up.
    page.wait_for_selector('[data-testid="files-card"][data-running="true"][data-loaded]', timeout=30_000)
    provider = make_provider("local", "local", {"root_dir": str(site.data_dir / "local-instances")})
    try:
        [server] = provider.list_servers()
        yield {"ctx": ctx, "page": page, "uid": uid, "provider": provider, "server": server.id}
    finally:
        provider.close()
        ctx.close()


def inside(world: dict[str, Any], script: str) -> str:
    out = world["provider"].exec_in_session(world["server"], ["sh", "-c", script])
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_upload_resumes_after_a_broken_chunk_and_download_is_byte_identical(site: Site, running) -> None:
    page, uid = running["page"], running["uid"]
    page.goto(f"/instances/{uid}")
    page.wait_for_selector('[data-testid="files-card"][data-loaded]')
    roots = page.eval_on_selector_all('#files-root option', "os => os.map(o => o.value)")
    assert len(roots) == 2 and roots[1].startswith("/data/processed"), roots
    home = roots[0]
    assert page.get_attribute('[data-testid="files-card"]', "data-loaded") == home

    # 20 MiB: three chunks of the page's 8 MiB; the second one breaks once on the way.
    data = os.urandom(20 * 1024 * 1024 + 7)
    broken: list[str] = []

    def break_once(route: Any) -> None:
        if "offset=8388608" in route.request.url and not broken:
            broken.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    allow_errors(r"ERR_CONNECTION_RESET .*/files/content\?.*offset=8388608")  # the chunk broken on purpose
    page.route(re.compile(r".*/files/content\?.*"), break_once)
    page.set_input_files('[data-testid="files-input"]',
                         files=[{"name": "scan-upload.bin", "mimeType": "application/octet-stream", "buffer": data}])
    seen_progress: list[float] = []
    net: list[str] = []
    page.on("request", lambda r: net.append(f"req {r.method} {r.url[-40:]}"))
    page.on("requestfailed", lambda r: net.append(f"failed {r.url[-40:]} {r.failure}"))
    page.on("response", lambda r: net.append(f"resp {r.status} {r.url[-40:]}"))
    page.click('[data-testid="files-upload"]')
    deadline = time.monotonic() + 120
    while page.get_attribute('[data-testid="files-card"]', "data-uploaded") != "scan-upload.bin":
        assert time.monotonic() < deadline, page.inner_text('[data-testid="files-card"]') + "\n".join(net) + site.log.read_text()[-4000:]
        assert page.locator('[data-testid="files-error"]').is_hidden(), page.inner_text('[data-testid="files-error"]')
        seen_progress.append(page.evaluate("document.getElementById('files-progress').value"))
        time.sleep(0.05)
    page.unroute(re.compile(r".*/files/content\?.*"))
    assert broken, "the broken chunk was never sent"
    assert any(0 < v < 1 for v in seen_progress), seen_progress[:20]
    assert "uploaded" in page.inner_text('[data-testid="files-progress-text"]')
    shot(page, "files-01-uploaded")
    on_host = _find(site.data_dir, "scan-upload.bin", 5)
    assert on_host is not None
    assert hashlib.sha256(on_host.read_bytes()).digest() == hashlib.sha256(data).digest()
    # Inside, the session's own account owns it (never root).
    owner = inside(running, "stat -c %u ~/scan-upload.bin").strip()
    assert owner != "0" and int(owner) == on_host.stat().st_uid
    page.wait_for_selector('#files-list [data-entry="scan-upload.bin"]')

    # Written inside the session: listed in a folder, downloaded byte-identical.
    inside(running, "mkdir -p ~/results && head -c 3000001 /dev/urandom > ~/results/fit.h5")
    expected = hashlib.sha256(inside_bytes(running, "results/fit.h5")).digest()
    page.goto(f"/instances/{uid}")
    page.click('#files-list [data-entry="results"] button.dir')
    page.wait_for_selector(f'[data-testid="files-card"][data-loaded="{home}/results"]')
    assert "results" in page.inner_text('[data-testid="files-path"]')
    with page.expect_download() as dl:
        page.click('#files-list [data-entry="fit.h5"] a[data-testid="file-download"]')
    got = Path(dl.value.path()).read_bytes()
    assert dl.value.suggested_filename == "fit.h5"
    assert hashlib.sha256(got).digest() == expected
    shot(page, "files-02-folder")
    # Back to the top by the crumbs; the processed data is the other root.
    page.click(f'#files-crumbs button[data-path="{home}"]')
    page.wait_for_selector(f'[data-testid="files-card"][data-loaded="{home}"]')
    page.select_option('[data-testid="files-root"]', roots[1])
    page.wait_for_selector(f'[data-testid="files-card"][data-loaded="{roots[1]}"]')


def inside_bytes(world: dict[str, Any], rel: str) -> bytes:
    # A whole uploaded file comes back: more than exec_in_session keeps by default.
    out = world["provider"].exec_in_session(
        world["server"], ["sh", "-c", f"base64 -w0 ~/{shlex.quote(rel)}"], max_output=256 * 1024**2
    )
    assert out.returncode == 0, out.stderr
    import base64

    return base64.b64decode(out.stdout)


def test_errors_of_a_transfer_are_shown_by_name(running) -> None:
    page, uid = running["page"], running["uid"]
    page.goto(f"/instances/{uid}")
    page.wait_for_selector('[data-testid="files-card"][data-loaded]')
    # A link inside that leads out of the home: the page says what the server refused.
    inside(running, "ln -sfn /etc ~/etc-link")
    allow_errors(r"status of 400 .*/files\?path=.*etc-link")
    page.goto(f"/instances/{uid}")
    page.wait_for_selector('[data-testid="files-card"][data-loaded]')
    page.click('#files-list [data-entry="etc-link"] button.dir')
    error = page.locator('[data-testid="files-error"]')
    error.wait_for()
    assert "leads outside" in error.inner_text()


def test_the_owner_edits_name_comments_keyboard_and_screen(site: Site, running) -> None:
    page, uid = running["page"], running["uid"]
    page.goto(f"/instances/{uid}")
    page.fill('[data-testid="edit-name"]', "")
    allow_errors(r"status of 400 .*/api/instances/[0-9a-f]+\)")
    page.click('[data-testid="edit-save"]')
    err = page.locator('[data-error-for="name"]')
    err.wait_for()
    assert "name" in err.inner_text()
    assert page.inner_text('[data-testid="instance-name"]') == "files of ev280"  # nothing written

    page.fill('[data-testid="edit-name"]', "fit of run 12")
    page.fill('[data-testid="edit-comments"]', "with the new mask")
    page.select_option('[data-testid="edit-keyboard"]', "fr-fr")
    page.select_option('[data-testid="edit-screen"]', "1920x1080")
    assert not page.is_checked('[data-testid="edit-clipboard"]')  # viewers get no clipboard unless the owner says so
    page.check('[data-testid="edit-clipboard"]')
    with page.expect_response(lambda r: r.url.endswith(f"/api/instances/{uid}") and r.request.method == "PATCH") as resp:
        page.click('[data-testid="edit-save"]')
    assert resp.value.status == 200, resp.value.text()
    page.wait_for_selector('[data-testid="instance-name"]:text-is("fit of run 12")')
    assert page.locator('[data-error-for="name"]').is_hidden()
    got = running["ctx"].request.get(f"/api/instances/{uid}").json()
    assert (got["name"], got["comments"], got["keyboard_layout"], got["screen"], got["clipboard_to_viewers"]) == (
        "fit of run 12", "with the new mask", "fr-fr", {"width": 1920, "height": 1080}, True)
    page.reload()
    assert page.is_checked('[data-testid="edit-clipboard"]')
    assert page.input_value('[data-testid="edit-keyboard"]') == "fr-fr"
    assert page.input_value('[data-testid="edit-screen"]') == "1920x1080"
    shot(page, "files-03-edited")


HOSTILE_CLIPBOARD = [
    "javascript:alert(document.domain)",
    "data:text/html,<script>alert(1)</script>",
    "https://doi.org@evil.example/",
    "https://evil.example/",
    "https://doi.org.evil.example/x",
    "https://d\u043ei.org/",
    "https://doi.org/" + "a" * 3000,
]


def _copy_inside(world: dict[str, Any], text: str) -> None:
    """Text into the session's CLIPBOARD selection, as a program in the desktop puts it there."""
    inside(world, f"printf %s {shlex.quote(text)} | xclip -selection clipboard -i -loops 0 >/dev/null 2>&1 &")


def test_a_url_copied_in_the_desktop_opens_in_one_click_and_nothing_hostile_is_offered(running) -> None:
    page, uid, ctx = running["page"], running["uid"], running["ctx"]
    if subprocess.run(["sh", "-c", "command -v xclip"], capture_output=True).returncode:
        pytest.skip("xclip is not installed (deploy/system-packages.txt)")
    page.goto(f"/instances/{uid}/desktop")
    page.wait_for_selector('body[data-desktop="connected"]', state="attached", timeout=30_000)
    link = page.locator('[data-testid="clipboard-open"]')
    for text in HOSTILE_CLIPBOARD:
        _copy_inside(running, text)
        # It reached the page (the clipboard panel shows it), and no link is offered.
        page.wait_for_function("t => document.getElementById('clipboard-text').value === t", arg=text, timeout=15_000)
        assert page.get_attribute("body", "data-clipboard-url") == "none", text
        assert link.is_hidden(), text

    allowed = "https://doi.org/10.15151/ESRF-ES-1234"
    _copy_inside(running, allowed)
    page.wait_for_selector('[data-testid="clipboard-open"]:visible', timeout=15_000)
    assert link.inner_text() == f"Open {allowed}"
    assert link.get_attribute("href") == allowed
    assert link.get_attribute("target") == "_blank"
    assert set(link.get_attribute("rel").split()) == {"noopener", "noreferrer"}
    shot(page, "files-04-clipboard-link")
    # No network here: the allowed site is answered by the test, in this browser only.
    ctx.route("https://doi.org/**", lambda route: route.fulfill(status=200, content_type="text/html",
                                                               body="<title>doi</title>"))
    try:
        with ctx.expect_page() as opened:
            link.click()
        tab = opened.value
        tab.wait_for_load_state()
        assert tab.url == allowed
        assert tab.evaluate("window.opener === null && document.referrer === ''")
        tab.close()
    finally:
        ctx.unroute("https://doi.org/**")


def test_a_print_inside_the_desktop_is_offered_as_its_pdf(running) -> None:
    """``lp`` in the desktop: the session's printer writes ~/PDF/report.pdf, the desktop page
    offers it, and the PDF downloaded holds the text printed. A PDF that was there before the
    page opened is not offered as news."""
    page, uid = running["page"], running["uid"]
    if not shutil.which("cupsd") or not shutil.which("pdftotext"):
        pytest.skip("needs cups and poppler-utils (deploy/system-packages.txt)")
    inside(running, "rm -rf ~/PDF && mkdir ~/PDF && printf '%%PDF-1.4' > ~/PDF/earlier.pdf")
    page.goto(f"/instances/{uid}/desktop")
    page.wait_for_selector('body[data-desktop="connected"][data-printed="watching"]', state="attached",
                           timeout=30_000)
    inside(running, "printf 'Trace elements in Roman glass, scan 42\\n' > /tmp/report.txt"
                    " && for i in $(seq 100); do lpstat -r >/dev/null 2>&1 && break; sleep 0.1; done"
                    " && lp -t report.txt /tmp/report.txt")
    link = page.locator('[data-testid="printed-link"]')
    link.wait_for(timeout=30_000)
    assert link.count() == 1 and link.inner_text() == "Printed: report.pdf"
    shot(page, "files-05-printed")
    with page.expect_download() as dl:
        link.click()
    assert dl.value.suggested_filename == "report.pdf"
    text = subprocess.run(["pdftotext", dl.value.path(), "-"], capture_output=True, text=True, check=True).stdout
    assert "Trace elements in Roman glass, scan 42" in text


def test_the_files_api_is_the_pages_own_origin_only(site: Site, running) -> None:
    """Without the session cookie (another site's page, a script) nothing is listed."""
    r = httpx.get(f"{site.url}/api/instances/{running['uid']}/files", timeout=10)
    assert r.status_code == 401
