"""The estimation tables: estimated and realised figures per window, and the estimation error."""

from __future__ import annotations

import duckdb

__all__ = ["ESTIMATION_ERRORS_DDL", "WINDOW_METRICS_DDL", "ensure_tables"]

WINDOW_METRICS_DDL = """CREATE TABLE IF NOT EXISTS monitoring.window_metrics (
    cohort VARCHAR NOT NULL,
    window_id VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,                  -- estimated | realised
    attribute VARCHAR NOT NULL,             -- overall | a sensitive attribute | an intersection (a&b)
    "group" VARCHAR NOT NULL,
    n BIGINT NOT NULL,                      -- rows of the group in the window (realised: labelled rows)
    metric VARCHAR NOT NULL,
    estimate DOUBLE,
    lower DOUBLE,
    upper DOUBLE,
    status VARCHAR NOT NULL,                -- estimated: estimated | estimated_only | refused | warn | insufficient_evidence
                                            -- realised: realised | pass | fail | insufficient_evidence
    reason VARCHAR,
    computed_at TIMESTAMP NOT NULL
)"""

ESTIMATION_ERRORS_DDL = """CREATE TABLE IF NOT EXISTS monitoring.estimation_errors (
    cohort VARCHAR NOT NULL,
    window_id VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    attribute VARCHAR NOT NULL,
    "group" VARCHAR NOT NULL,
    n_labelled BIGINT NOT NULL,
    estimated DOUBLE,                       -- the estimate on the labelled rows (like for like)
    realised DOUBLE,
    error DOUBLE,                           -- estimated - realised
    computed_at TIMESTAMP NOT NULL
)"""


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create both estimation tables if they do not exist."""
    for ddl in (WINDOW_METRICS_DDL, ESTIMATION_ERRORS_DDL):
        con.execute(ddl)
