"""The import direction: a module imports only from its own layer or the layers below it, and no
import cycle exists.

Layers, lowest first (the names are packages or top-level modules of ``visa``):

0. ground: ``db``, ``errors``, ``settings``, ``clock``, ``types``, ``states``, ``logs``, ``migrate``,
   ``metrics`` (the counters every layer increments), ``policy``, ``paging`` (page and LIKE helpers for
   queries), the mail (``mail``: the outbox, its ``SentEmail`` model, rendering and SMTP; each feature
   registers its own email kinds, so the outbox imports no feature and every feature may queue mail)
   and any other module that depends on nothing of visa (``pubsub``: PostgreSQL's LISTEN/NOTIFY;
   ``bus``: the event bus each running visa owns, which wakes its event streams);
1. ``clouds``, ``users`` (with ``actor``, the user a request acts as, and ``audit``, which every
   service writes to);
2. ``experiments``, ``catalogue``, ``provisioning`` (with ``services``, the running settings,
   database, clock and cloud providers that the instances' workers are given);
3. ``instances`` (the machine itself: its rows, rules, spec, lifecycle and the hook that says what
   changed), ``usage`` (samples of what instances hold, over time) and ``network`` (the security
   groups the network rules give servers);
4. what is done with an instance, each a feature of its own built on ``instances``: ``sharing``
   (members, invitations, presence, support), ``transfers`` (files to and from it), ``commands``
   (carrying out the queued commands and following the machines as they move) and ``bookings``
   (GPU machines held for a beamtime's days, and the machines made from them);
5. ``auth``, ``web``, ``gateway``, the banners (``announcements``), ``openapi`` and the help pages
   (``help``);
6. ``admin``, ``scheduler``, ``cli``, ``checks`` (the configuration checks ``visa check-config`` and the
   dashboard run: they look at every part), ``asgi`` and ``serving``, ``demo``, the migrations,
   ``visa.models`` (it imports every feature's models to fill the metadata) and ``visa.web.app`` (the
   factory that assembles every feature's blueprints).

A feature's modules count by their role (docs/architecture.md): its HTTP modules (``api.py``,
``*_api.py``, ``pages.py``, ``views.py``) are the HTTP layer of the feature and sit in layer 5 with
``web``; its ``jobs.py`` is the scheduler's part and sits in layer 6. The rest (models, service,
schemas, ...) sits at the feature's layer.

Every import counts, also one inside a function: it is a dependency all the same, taken later.
Imports under ``if TYPE_CHECKING:`` do not count: they never run, and typed relationships between
models name each other both ways.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "visa"

LAYERS: list[set[str]] = [
    {"db", "errors", "settings", "clock", "types", "states", "logs", "migrate", "metrics", "policy", "paging", "mail",
     "pubsub", "bus"},
    {"clouds", "users", "actor", "audit"},
    {"experiments", "catalogue", "provisioning", "services"},
    {"instances", "usage", "network"},
    {"sharing", "transfers", "commands", "bookings"},
    {"auth", "web", "gateway", "announcements", "openapi", "help"},
    {"admin", "scheduler", "cli", "checks", "asgi", "serving", "demo", "migrations", "models"},
]
HTTP_LAYER, SCHEDULER_LAYER, TOP_LAYER = 5, 6, 6
# Modules placed by what they do rather than by their package.
ASSEMBLERS = {"visa.web.app", "visa.models", "visa.__main__"}
HTTP_NAMES = {"api", "pages", "views"}


def _role_layer(module: str) -> int | None:
    """The layer a module's role puts it in, whatever its package (None: its package decides)."""
    if module in ASSEMBLERS:
        return TOP_LAYER
    leaf = module.rsplit(".", 1)[-1]
    if leaf in HTTP_NAMES or leaf.endswith("_api"):
        return HTTP_LAYER
    if leaf == "jobs":
        return SCHEDULER_LAYER
    return None


def _package_layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) == 1:
        return 0  # the visa package itself
    for i, names in enumerate(LAYERS):
        if parts[1] in names:
            return i
    return None


def layer_of(module: str) -> int | None:
    """The layer of ``visa.<package>...``; None for a module no layer names (reported as such).

    A role never lowers a module: the HTTP modules of ``admin`` stay in the top layer with it."""
    package, role = _package_layer(module), _role_layer(module)
    if role is None or package is None:
        return package if role is None else role
    return max(package, role)


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node except the bodies of ``if TYPE_CHECKING:`` (their ``else`` runs, so it counts)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(source: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    if node.level == 0:
        return node.module
    base = source.split(".") if is_package else source.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(root: Path) -> tuple[set[str], list[Import]]:
    """The modules under ``root`` (a package directory named visa) and every import between them."""
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    found: list[Import] = []

    def known(name: str) -> str | None:
        # The longest prefix that is one of our modules: ``visa.a.b.func`` -> ``visa.a.b``.
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    for source, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in _runtime_nodes(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(source, is_package, node)
                if base is None:
                    continue
                # ``from visa.provisioning import names`` imports the module ``names``.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for name in targets:
                target = known(name)
                if target is not None and target != source:
                    found.append(Import(source, target, getattr(node, "lineno", 0)))
    return modules, found


def upward(found: Iterable[Import]) -> list[Import]:
    out = []
    for imp in found:
        low, high = layer_of(imp.source), layer_of(imp.target)
        if low is not None and high is not None and high > low:
            out.append(imp)
    return sorted(set(out), key=lambda i: (i.source, i.target, i.line))


def unplaced(modules: Iterable[str]) -> list[str]:
    return sorted(m for m in modules if layer_of(m) is None)


def cycles(found: Iterable[Import]) -> list[list[str]]:
    """Groups of modules that import each other, directly or round a loop (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for imp in found:
        graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                group.append(item)
                if item == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for node in sorted(graph):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(groups)


def _report(ups: list[Import], loops: list[list[str]], lost: list[str]) -> str:
    lines = [f"{len(ups)} upward imports, {len(loops)} import cycles, {len(lost)} modules in no layer"]
    lines += [
        f"  up: {i.source}:{i.line} (layer {layer_of(i.source)}) -> {i.target} (layer {layer_of(i.target)})"
        for i in ups
    ]
    lines += [f"  cycle: {' -> '.join(group)}" for group in loops]
    lines += [f"  no layer: {m}" for m in lost]
    return "\n".join(lines)


# --- the rule checker itself must catch what it is there for -------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "visa"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_finds_upward_imports_cycles_and_respects_roles(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "db.py": "def f():\n    import visa.models\n",  # lazy, still a dependency
            "models.py": "from visa.instances.models import Instance\nfrom visa.db import Base\n",
            "clouds/__init__.py": "",
            "clouds/base.py": "from visa.instances import models\n",
            "clouds/typed.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from visa.instances.models import I\n"
                "else:\n    from visa.web import context\n"
            ),
            "instances/__init__.py": "",
            "instances/models.py": "from visa.clouds.base import X\n",
            "instances/api.py": "from visa.web.context import current_actor\n",  # HTTP layer: fine
            "instances/service.py": "from . import sharing\n",
            "instances/sharing.py": "from .service import y\nfrom visa.auth.policy import require\n",
            "instances/jobs.py": "from visa.scheduler.runner import job\n",  # scheduler layer: fine
            "web/__init__.py": "",
            "web/context.py": "",
            "auth/__init__.py": "",
            "auth/policy.py": "",
            "scheduler/__init__.py": "",
            "scheduler/runner.py": "",
            "stray.py": "",
        },
    )
    modules, found = imports_of(root)
    pairs = {(i.source, i.target) for i in upward(found)}
    assert pairs == {
        ("visa.db", "visa.models"),
        ("visa.clouds.base", "visa.instances.models"),
        ("visa.clouds.typed", "visa.web.context"),  # the else branch of TYPE_CHECKING runs
        ("visa.instances.sharing", "visa.auth.policy"),
    }
    assert cycles(found) == [
        ["visa.clouds.base", "visa.instances.models"],
        ["visa.db", "visa.models"],
        ["visa.instances.service", "visa.instances.sharing"],
    ]
    assert unplaced(modules) == ["visa.stray"]


def test_roles_place_a_features_http_and_job_modules() -> None:
    assert layer_of("visa.instances.service") == 3
    assert layer_of("visa.instances.api") == layer_of("visa.sharing.api") == HTTP_LAYER
    assert layer_of("visa.instances.service") < layer_of("visa.sharing.service") < HTTP_LAYER
    assert layer_of("visa.commands.worker") == layer_of("visa.transfers.service") == layer_of("visa.sharing.service")
    assert layer_of("visa.catalogue.jobs") == SCHEDULER_LAYER
    assert layer_of("visa.web.app") == layer_of("visa.models") == TOP_LAYER
    assert layer_of("visa.clouds.local") == 1 and layer_of("visa.settings") == 0


# --- visa itself ---------------------------------------------------------------------------------

# Layers that have no known violation left: any upward import from them, or cycle within them, fails.
FLOOR = ("visa.clouds", "visa.provisioning", "visa.db", "visa.errors", "visa.settings", "visa.clock",
         "visa.types", "visa.states", "visa.logs", "visa.migrate")


def _under(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_floor_imports_nothing_above_it() -> None:
    modules, found = imports_of(ROOT)
    ups = [i for i in upward(found) if _under(i.source, FLOOR)]
    loops = [g for g in cycles(found) if any(_under(m, FLOOR) for m in g)]
    assert not ups and not loops, _report(ups, loops, [])


def test_every_module_has_a_layer() -> None:
    modules, _ = imports_of(ROOT)
    assert not unplaced(modules), _report([], [], unplaced(modules))


def test_no_upward_import_and_no_cycle() -> None:
    modules, found = imports_of(ROOT)
    ups, loops = upward(found), cycles(found)
    report = _report(ups, loops, unplaced(modules))
    print(report)
    assert not ups and not loops, report


# --- settings are passed in ----------------------------------------------------------------------

# The entry points read visa's settings (the environment and VISA_CONFIG) once, at the top, and
# hand them down: the command line, the app factory when an ASGI/WSGI server calls it with none,
# and Alembic's environment. Every other module is given its settings.
SETTINGS_READERS = {"visa.settings", "visa.cli.common", "visa.web.app", "visa.migrations.env"}


def settings_reads(root: Path) -> list[tuple[str, int]]:
    """(module, line) of every mention of ``get_settings`` outside the entry points, in a module
    above the ground floor: a call, an import of it, or passing it along."""
    out = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        if module in SETTINGS_READERS or layer_of(module) == 0:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
            if ((isinstance(node, ast.Name) and node.id == "get_settings")
                    or (isinstance(node, ast.Attribute) and node.attr == "get_settings")
                    or "get_settings" in names):
                out.append((module, node.lineno))
    return sorted(set(out))


def test_the_settings_checker_finds_a_global_read(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "settings.py": "def get_settings(): ...\n",
        "clouds/__init__.py": "",
        "clouds/lazy.py": "def f():\n    from visa.settings import get_settings\n    return get_settings().data_dir\n",
        "clouds/dotted.py": "import visa.settings\nroot = visa.settings.get_settings()\n",
        "clouds/given.py": "def f(settings):\n    return settings.data_dir\n",
        "cli/__init__.py": "",
        "cli/common.py": "from visa.settings import get_settings\n",
    })
    assert settings_reads(root) == [("visa.clouds.dotted", 2), ("visa.clouds.lazy", 2), ("visa.clouds.lazy", 3)]


def test_no_module_above_the_ground_floor_reads_the_settings_itself() -> None:
    found = settings_reads(ROOT)
    assert not found, "get_settings() outside the entry points:\n" + "\n".join(f"  {m}:{n}" for m, n in found)
