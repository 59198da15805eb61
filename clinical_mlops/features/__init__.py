"""Features: cohort specifications (:mod:`.cohort`, YAML under ``cohorts/``), the feature SQL, schema
check and patient-grouped split (:mod:`.build`, SQL under ``sql/``), the feature table's columns as plain values
(:mod:`.columns`), and what the features asset does
(:mod:`.steps`)."""

__all__ = ["build", "cohort", "columns", "steps"]
