"""Validation's defaults as plain values (no pandas or Pandera): the Dagster config reads them when the
Definitions load; :mod:`.rules` and :mod:`.steps` re-export them."""

from __future__ import annotations

__all__ = ["DEFAULT_ENGINE", "DEFAULT_MAX_QUARANTINE_FRACTION", "ENGINES"]

ENGINES = ("sql", "pandera")
DEFAULT_ENGINE = "sql"
"""SQL finds and names the failing rows, Pandera re-checks them (same result as ``pandera``, much faster)."""

DEFAULT_MAX_QUARANTINE_FRACTION = 0.05
"""Above this share of quarantined rows the extract is flagged (WARN) for the data owner."""
