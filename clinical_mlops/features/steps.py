"""What the features asset does, as a plain function (no Dagster): ``[cohort, encounter_features]``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb

from clinical_mlops.core.chunking import DEFAULT_CHUNK_ROWS, bound_memory
from clinical_mlops.features import build
from clinical_mlops.features.cohort import CohortSpec

if TYPE_CHECKING:
    import pandera.pandas as pa

__all__ = ["FeatureStep", "build_features"]


@dataclass(frozen=True)
class FeatureStep:
    build: build.FeatureBuild
    schema_check: build.FeatureSchemaCheck
    build_seconds: float
    schema: pa.DataFrameSchema
    """The Pandera schema the rows were checked against (shown in the UI through dagster-pandera)."""

    @property
    def schema_valid(self) -> bool:
        """No failing row, and at least one row checked (an empty table is no evidence of a valid schema)."""
        return not self.schema_check.failures and self.schema_check.rows_checked > 0


def build_features(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> FeatureStep:
    """``[cohort, encounter_features]``: build ``features.<cohort>`` in SQL (exclusions applied, label
    derived) and check every row against the cohort's Pandera feature schema, in bounded memory."""
    bound_memory(con)
    started = time.perf_counter()
    built = build.build_features(con, spec)
    seconds = time.perf_counter() - started
    return FeatureStep(build=built, schema_check=build.check_feature_schema(con, spec, chunk_rows=chunk_rows),
                       build_seconds=seconds, schema=build.feature_schema(spec))
