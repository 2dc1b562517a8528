"""The help pages: Markdown files, one page each, rendered with no raw HTML and links that go
only where a link should (http, https, mailto, or within the site).

The facility's own files (settings ``help.dir``) or, by default, visa's user guide (``guide/``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from markdown_it import MarkdownIt

GUIDE = Path(__file__).parent / "guide"
SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_PAGE_BYTES = 1_000_000
MAX_PAGES = 200
_SCHEMES = ("http", "https", "mailto")
# A link to another page by its file name (``sharing.md#invite``): the page's own address.
_PAGE_LINK = re.compile(r"([a-z0-9][a-z0-9_-]{0,63})\.md(#.*)?")


class HelpError(Exception):
    """A help directory that cannot be served, naming the file and what is wrong."""


@dataclass(frozen=True)
class Page:
    slug: str
    title: str
    path: Path


def load_pages(directory: Path) -> dict[str, Page]:
    """The pages of a help directory, ``index`` first, each titled by its first ``# `` heading."""
    if not directory.is_dir():
        raise HelpError(f"{directory}: not a directory")
    files = sorted(directory.glob("*.md"))
    if len(files) > MAX_PAGES:
        raise HelpError(f"{directory}: more than {MAX_PAGES} pages")
    pages: dict[str, Page] = {}
    for path in files:
        if not SLUG.fullmatch(path.stem):
            raise HelpError(f"{path}: a page's file name is lower-case letters, digits, '-' and '_', then .md")
        if path.stat().st_size > MAX_PAGE_BYTES:
            raise HelpError(f"{path}: larger than {MAX_PAGE_BYTES} bytes")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise HelpError(f"{path}: unreadable: {exc}") from None
        heading = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), "")
        pages[path.stem] = Page(path.stem, heading or path.stem.replace("-", " ").capitalize(), path)
    if "index" not in pages:
        raise HelpError(f"{directory}: no index.md (the help's first page)")
    return {"index": pages.pop("index"), **pages}


def _safe_link(url: str) -> bool:
    if any(c.isspace() or ord(c) < 32 for c in url):
        return False
    parts = urlsplit(url)
    if parts.scheme:
        return parts.scheme.lower() in _SCHEMES and (parts.scheme.lower() == "mailto" or bool(parts.netloc))
    return not url.startswith("//")  # a relative link, not a scheme-relative one to another host


def _markdown() -> MarkdownIt:
    # CommonMark with tables; raw HTML in the files is shown as text, never as markup.
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
    md.disable("image")  # the help serves no files: an image would point elsewhere
    md.validateLink = _safe_link  # type: ignore[method-assign]
    renderer: Any = md.renderer  # markdown-it's HTML renderer (its protocol type lacks the rules)
    default_open = renderer.rules.get("link_open")

    def link_open(tokens: list[Any], idx: int, options: Any, env: Any) -> str:
        token = tokens[idx]
        href = token.attrGet("href") or ""
        page = _PAGE_LINK.fullmatch(href)
        if page:
            token.attrSet("href", page.group(1) + (page.group(2) or ""))
        elif urlsplit(href).scheme in ("http", "https"):
            token.attrSet("rel", "noopener noreferrer")
        if default_open is not None:
            return str(default_open(tokens, idx, options, env))
        return str(renderer.renderToken(tokens, idx, options, env))

    renderer.rules["link_open"] = link_open
    return md


_MD = _markdown()


def render(page: Page) -> str:
    """The page's HTML: safe to put in a page as is (no raw HTML, links checked)."""
    return _MD.render(page.path.read_text(encoding="utf-8"))
