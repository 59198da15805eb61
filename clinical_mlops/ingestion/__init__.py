"""Getting extracts in: the Diabetes 130 extract format (:mod:`.diabetes130`), the landing zone
that lands CSV extracts into ``raw`` as they are (:mod:`.landing`), the Safe Harbor identifier
scan and keyed pseudonymisation applied before data goes anywhere (:mod:`.deid`), the real UCI
release (:mod:`.uci`) and the deterministic synthetic generator calibrated on it
(:mod:`.synthetic`). Wired by ``clinical_mlops/defs/ingestion``. What each of its assets does is one function in :mod:`.steps`."""

__all__ = ["deid", "diabetes130", "landing", "steps", "synthetic", "uci"]
