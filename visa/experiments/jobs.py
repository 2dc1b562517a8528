"""The scheduled import: the user office's export from its extractor (``experiments.import_source``),
validated whole and applied in one transaction, or not at all."""

from __future__ import annotations

import logging

from visa.actor import SYSTEM
from visa.experiments.importer import ImportFileError, ImportResult, run_import
from visa.experiments.source import fetch, source_name
from visa.services import Services

log = logging.getLogger(__name__)


def run(services: Services) -> ImportResult | None:
    """Import from the configured source; None when none is configured. A bad export (a bad row, an
    unreachable source) changes nothing and is raised, so the job counts as failed."""
    source = services.settings.experiments.import_source
    if source is None:
        return None
    try:
        data = fetch(source)
        result = run_import(SYSTEM, services.database, services.clock, data, services.settings)
    except ImportFileError as exc:
        log.error("experiments import from %s refused, nothing changed:\n  %s", source_name(source),
                  "\n  ".join(exc.problems[:50]))
        raise
    log.info("experiments imported from %s: %s", source_name(source), result)
    return result
