"""Validation of landed extracts against their declared format (:mod:`.rules`): the per-row rules,
declared once and rendered as a Pandera schema and as DuckDB SQL, plus the cross-row rules; a
failing row goes to ``staging.quarantine`` with the checks it failed, every other row typed and
pseudonymised to ``staging.encounters``. Wired by ``clinical_mlops/defs/validation``."""

__all__ = ["rules"]
