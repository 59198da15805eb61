"""Cohorts and their feature tables: cohort specifications — what a use case predicts, for whom,
from which features — read from ``cohorts/*.yaml`` (:mod:`.cohort`), and the feature tables
built from them in DuckDB SQL (``sql/``), with their Pandera schema and the patient split
(:mod:`.build`). Wired by ``clinical_mlops/defs/features``."""

__all__ = ["build", "cohort"]
