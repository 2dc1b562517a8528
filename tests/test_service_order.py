"""Every function that takes an actor and a session takes them as ``(actor, session, clock, ...)``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("actor", "session", "clock")


def test_services_take_actor_session_clock_in_that_order() -> None:
    wrong = []
    for path in sorted((ROOT / "visa").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            names = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
            if "actor" not in names or "session" not in names:
                continue
            leading = names[: len([n for n in names if n in ORDER])]
            if leading != [n for n in ORDER if n in names]:
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}({', '.join(names)})")
    assert not wrong, wrong
