"""What a machine's boot says about itself: the ``visa: FAILED <step>: <reason>`` markers.

The boot scripts (``files/``) print one such line on the console when a step fails; a
provider that can read the console (:meth:`visa.clouds.base.Provider.boot_report`) hands
its tail here. Everything in it comes from the machine, so it is hostile: only the last
markers are read, each reason is stripped of control characters and cut short, and the
result is plain text (never rendered as HTML).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from visa.clouds.base import REPORT_MAX_CHARS

# Steps whose failure leaves a working desktop: the machine is usable without its data.
DATA_STEPS = frozenset({"data-mount"})
REASON_MAX_CHARS = 160
MAX_FAILURES = 5
_STEP = re.compile(r"[a-z][a-z0-9-]{0,31}")
# The marker may follow a console prefix (cloud-init's "[  12.3] cloud-init[512]: ").
_MARKER = re.compile(r"visa: FAILED ([^:\s]{1,64}): (.*)")
# A facility boot script (user-data part) that exits non-zero, as cloud-init reports it.
_CLOUD_INIT_PART = re.compile(r"Failed running /var/lib/cloud/instance/scripts/(part-\d{1,4})")

_ESCAPE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")


@dataclass(frozen=True)
class StepFailure:
    step: str
    reason: str

    @property
    def fatal(self) -> bool:
        """Whether the desktop cannot be expected to work after this failure."""
        return self.step not in DATA_STEPS


def _printable(ch: str) -> bool:
    return not unicodedata.category(ch).startswith("C")  # Cc, Cf (bidi overrides), Cs, Co, Cn


def clean(text: str, limit: int = REASON_MAX_CHARS) -> str:
    """One line of plain text: terminal escapes and control or format characters dropped,
    whitespace folded, cut at ``limit``."""
    text = _ESCAPE.sub("", text)
    kept = "".join(" " if ch in "\t\r\n" else ch for ch in text if ch in "\t\r\n" or _printable(ch))
    line = " ".join(kept.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def failures(console: str | None) -> list[StepFailure]:
    """The distinct failed steps the console reports, in the order they happened (at most a few)."""
    if not console:
        return []
    tail = console[-REPORT_MAX_CHARS:]
    found: dict[tuple[str, str], StepFailure] = {}
    for raw in tail.splitlines():
        line = clean(raw, limit=1024)
        match = _MARKER.search(line)
        if match:
            step = match.group(1).lower()
            if not _STEP.fullmatch(step):
                continue
            failure = StepFailure(step, clean(match.group(2)) or "no reason given")
        else:
            part = _CLOUD_INIT_PART.search(line)
            if not part:
                continue
            failure = StepFailure(
                "boot-script", f"the image's boot script ({part.group(1)}) exited with an error"
            )
        found.setdefault((failure.step, failure.reason), failure)
    return list(found.values())[-MAX_FAILURES:]


def summary(found: list[StepFailure]) -> str:
    """The user's and the administrators' message for the failures (plain text, bounded)."""
    parts = [f"{f.step}: {f.reason}" for f in found]
    if all(not f.fatal for f in found):
        return clean(
            "the desktop works but some data are not mounted (" + "; ".join(parts) + "). "
            "Reboot the machine to try again, or ask the administrators",
            limit=600,
        )
    return clean(
        "the machine's boot configuration failed (" + "; ".join(parts) + "). Delete it and create "
        "another; administrators can read its console log in the cloud",
        limit=600,
    )
