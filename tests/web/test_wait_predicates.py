"""Every ``wait_for_function`` in the tests and benches is given a function, not an expression.

Playwright evaluates an expression again with ``eval`` on each poll after the first, in the
page; our Content-Security-Policy (no 'unsafe-eval') refuses that, so a wait whose condition is
not true at once fails with an EvalError. A function is evaluated once and then called.
"""

from __future__ import annotations

import ast
import re

from tests.browser import ROOT

FUNCTION = re.compile(r"^\s*(async\s+)?(function\b|\([^()]*\)\s*=>|\w+\s*=>)")


def test_every_wait_for_function_is_given_a_function() -> None:
    offenders = []
    for path in [*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "wait_for_function" and node.args
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                    and not FUNCTION.match(node.args[0].value)):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
    assert FUNCTION.match("() => 1") and FUNCTION.match("t => t") and not FUNCTION.match("(r => r)(x)")
