"""Features: cohort specifications (:mod:`.cohort`, YAML under ``cohorts/``), the feature SQL, schema
check and patient-grouped split (:mod:`.build`, SQL under ``sql/``), and what the features asset does
(:mod:`.steps`)."""

__all__ = ["build", "cohort", "steps"]
