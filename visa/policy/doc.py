"""docs/permissions.md, written from ``POLICY``: ``python -m visa.policy.doc > docs/permissions.md``.

A test fails when the committed page and the table disagree.
"""

from __future__ import annotations

import inspect
import sys

from visa.policy.rules import All, Rule
from visa.policy.table import POLICY

HEADER = """# Permissions

Generated from `visa/policy/table.py` (`POLICY`) by `python -m visa.policy.doc > docs/permissions.md`;
do not edit by hand. What is not listed is denied. An action is allowed when any one of its rules
allows it; `a & b` needs both. On an instance the actor cannot even see, a refusal is a 404.

| action | allowed for |
|---|---|
"""


def _describe(rule: Rule) -> str:
    if isinstance(rule, All):
        return " & ".join(_describe(r) for r in rule.rules)
    return f"`{rule!r}`"


def markdown() -> str:
    rows = [f"| `{action}` | {'; '.join(_describe(r) for r in rules)} |" for action, rules in POLICY.items()]
    kinds = sorted(
        {
            type(r)
            for rules in POLICY.values()
            for rule in rules
            for r in (rule.rules if isinstance(rule, All) else (rule,))
        },
        key=lambda t: t.__name__,
    )
    legend = [f"- `{k.__name__}`: {' '.join((inspect.getdoc(k) or '').split())}" for k in kinds if k.__doc__]
    return HEADER + "\n".join(rows) + "\n\n## Rules\n\n" + "\n".join(legend) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
