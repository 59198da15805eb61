"""Validation: the declared format's rules as Pandera and SQL, valid rows to staging and the rest to
quarantine with reasons (:mod:`.rules`), and what the validation asset does (:mod:`.steps`)."""

__all__ = ["rules", "settings", "steps"]
