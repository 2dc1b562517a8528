"""/help: the help pages, for everyone (logged in or not: the login page links them)."""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template
from markupsafe import Markup

from visa.help.content import GUIDE, SLUG, HelpError, load_pages, render
from visa.web.context import services

bp = Blueprint("help", __name__)


@bp.get("/help")
def root():
    return redirect("/help/", code=301)


@bp.get("/help/", defaults={"slug": "index"})
@bp.get("/help/<slug>")
def page(slug: str):
    if not SLUG.fullmatch(slug):
        abort(404)
    directory = services().settings.help.dir or GUIDE
    try:
        pages = load_pages(directory)
    except HelpError:  # `visa check-config` names what is wrong; visitors get no path
        abort(503)
    if slug not in pages:
        abort(404)
    body = Markup(render(pages[slug]))  # markdown-it's output: no raw HTML, links checked
    return render_template("help.html", pages=list(pages.values()), current=pages[slug], body=body)
