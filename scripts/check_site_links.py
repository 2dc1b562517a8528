#!/usr/bin/env python3
"""Checks a built documentation site offline: every internal href and src resolves to a built
file (and its #anchor to an id in that file), and no script, style or image comes from another
site (the site is served without a CDN). Prints each broken link; exit 1 if any.

Usage: scripts/check_site_links.py [SITE_DIR]   (default: build/site)
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name") and (name == "id" or tag == "a"):
                self.ids.add(value)
            elif name in ("href", "src"):
                self.links.append((tag, name, value))


def check(site: Path) -> list[str]:
    pages: dict[Path, _Page] = {}
    for path in sorted(site.rglob("*.html")):
        page = _Page()
        page.feed(path.read_text(encoding="utf-8"))
        pages[path.resolve()] = page
    problems = []
    for path, page in pages.items():
        where = path.relative_to(site.resolve())
        for tag, attr, value in page.links:
            url = urlsplit(value)
            if url.scheme in ("mailto", "data", "javascript"):
                continue
            if url.scheme or url.netloc:
                if tag in ("script", "img", "link", "iframe", "source"):
                    problems.append(f"{where}: <{tag} {attr}> loads {value} from another site")
                continue
            if not url.path:
                target = path
            elif url.path.startswith("/"):  # served from the site's root (its 404 page)
                target = (site / unquote(url.path).lstrip("/")).resolve()
            else:
                target = (path.parent / unquote(url.path)).resolve()
            if url.path.endswith("/") or (target.is_dir() and not url.path.endswith(".html")):
                target = target / "index.html"
            if not target.is_relative_to(site.resolve()) or not target.is_file():
                problems.append(f"{where}: {value} -> no such file in the site")
                continue
            if url.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else set()
                if unquote(url.fragment) not in ids:
                    problems.append(f"{where}: {value} -> no anchor #{url.fragment}")
    return problems


def main() -> int:
    site = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "site"
    if not (site / "index.html").is_file():
        print(f"check_site_links: no site at {site} (run mkdocs build first)", file=sys.stderr)
        return 1
    problems = check(site)
    for p in problems:
        print(p, file=sys.stderr)
    print(f"check_site_links: {len(list(site.rglob('*.html')))} pages, {len(problems)} broken links")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
