"""The monitoring tables production monitoring appends to: outcomes, metrics over time, skew."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

__all__ = ["OUTCOMES_DDL", "PRODUCTION_METRICS_DDL", "SKEW_DDL", "ensure_tables", "utc_now"]

OUTCOMES_DDL = """CREATE TABLE IF NOT EXISTS monitoring.prediction_outcomes (
    cohort VARCHAR NOT NULL,
    source VARCHAR NOT NULL,                -- online | batch
    prediction_ref VARCHAR NOT NULL,        -- log entry hash (online) or extract:encounter:version (batch)
    encounter_id BIGINT NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    predicted_at TIMESTAMP NOT NULL,
    score DOUBLE NOT NULL,
    flagged BOOLEAN,
    operating_threshold DOUBLE,
    label INTEGER NOT NULL,
    label_source VARCHAR NOT NULL,          -- warehouse:<extract_id> | labels_file
    label_observed_at TIMESTAMP NOT NULL,
    groups MAP(VARCHAR, VARCHAR),           -- sensitive attribute -> group, as the source contract defines them
    joined_at TIMESTAMP NOT NULL,
    PRIMARY KEY (cohort, source, prediction_ref)
)"""

PRODUCTION_METRICS_DDL = """CREATE TABLE IF NOT EXISTS monitoring.production_metrics (
    computed_at TIMESTAMP NOT NULL,
    cohort VARCHAR NOT NULL,
    period_start TIMESTAMP NOT NULL,
    period VARCHAR NOT NULL,                -- day | week | month | window
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    n BIGINT NOT NULL,
    n_positive BIGINT NOT NULL,
    metric VARCHAR NOT NULL,
    estimate DOUBLE,
    lower DOUBLE,
    upper DOUBLE
)"""

SKEW_DDL = """CREATE TABLE IF NOT EXISTS monitoring.serving_skew (
    computed_at TIMESTAMP NOT NULL,
    cohort VARCHAR NOT NULL,
    feature VARCHAR NOT NULL,
    feature_type VARCHAR NOT NULL,
    test VARCHAR NOT NULL,
    statistic DOUBLE,
    p_value_adjusted DOUBLE,
    psi DOUBLE,
    distribution_shift BOOLEAN NOT NULL,    -- significant and material, as drift is judged
    n_reference BIGINT NOT NULL,
    n_served BIGINT NOT NULL,
    n_matched BIGINT NOT NULL,              -- served encounters also in the warehouse
    mismatches BIGINT NOT NULL,             -- of those, how many were served a different value
    mismatch_rate DOUBLE,
    skewed BOOLEAN NOT NULL,
    policy_sha256 VARCHAR
)"""


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the three production-monitoring tables if they do not exist."""
    for ddl in (OUTCOMES_DDL, PRODUCTION_METRICS_DDL, SKEW_DDL):
        con.execute(ddl)


def utc_now() -> datetime:
    """Naive UTC timestamp, as the warehouse stores times."""
    return datetime.now(UTC).replace(tzinfo=None)
