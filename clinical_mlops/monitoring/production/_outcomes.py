"""Outcomes joined to production predictions as they arrive (after the label delay), never rewritten.

Predictions come from the ingested prediction log (requests that named their ``encounter_id``)
and from batch scoring. An outcome is the cohort label of the encounter in a validated extract
(the cohort's own target SQL) or a row of an operator's labels file, which takes precedence.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from clinical_mlops.core.warehouse import table_exists, transaction
from clinical_mlops.features import build as features
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.monitoring import settings
from clinical_mlops.monitoring.production._tables import ensure_tables, utc_now

__all__ = [
    "DEFAULT_LABEL_DELAY_DAYS",
    "LabelJoinSummary",
    "join_labels",
    "labelled_predictions",
    "no_labels_reason",
    "production_predictions_sql",
    "read_labels_file",
    "stage_warehouse_outcomes",
]


DEFAULT_LABEL_DELAY_DAYS = settings.LABEL_DELAY_DAYS
"""Days after a prediction before its outcome counts as known (a 30-day readmission is not known before);
:data:`clinical_mlops.monitoring.settings.LABEL_DELAY_DAYS`, the policy's default."""


def no_labels_reason(window_days: float, label_delay_days: float = DEFAULT_LABEL_DELAY_DAYS) -> str:
    """Why a production check has no evidence when no labelled outcome is in its window."""
    return (f"0 labelled outcomes in the window (the last {window_days:g} days); labels arrive after "
            f"{label_delay_days:g} days")


def production_predictions_sql(con: duckdb.DuckDBPyConnection, cohort: str) -> tuple[str, list]:
    """A SELECT of every production prediction with an encounter id (online and batch)."""
    parts, params = [], []
    if table_exists(con, "monitoring.prediction_log"):
        parts.append(
            """SELECT 'online' AS source, entry_hash AS prediction_ref, encounter_id, model_name, model_version,
                      logged_at AS predicted_at, risk AS score, flagged, operating_threshold
               FROM monitoring.prediction_log
               WHERE cohort = ? AND kind = 'prediction' AND encounter_id IS NOT NULL AND risk IS NOT NULL"""
        )
        params.append(cohort)
    if table_exists(con, "ml.batch_predictions"):
        parts.append(
            """SELECT 'batch' AS source,
                      extract_id || ':' || CAST(encounter_id AS VARCHAR) || ':' || model_version AS prediction_ref,
                      encounter_id, model_name, model_version, predicted_at, score, flagged, operating_threshold
               FROM ml.batch_predictions WHERE cohort = ?"""
        )
        params.append(cohort)
    if not parts:
        return (
            "SELECT NULL::VARCHAR AS source, NULL::VARCHAR AS prediction_ref, NULL::BIGINT AS encounter_id, "
            "NULL::VARCHAR AS model_name, NULL::VARCHAR AS model_version, NULL::TIMESTAMP AS predicted_at, "
            "NULL::DOUBLE AS score, NULL::BOOLEAN AS flagged, NULL::DOUBLE AS operating_threshold WHERE FALSE",
            [],
        )
    return " UNION ALL ".join(parts), params


def _groups_sql(spec: CohortSpec, alias: str) -> str:
    attributes = list(dict.fromkeys(spec.sensitive_attributes))
    if not attributes:
        return "CAST(NULL AS MAP(VARCHAR, VARCHAR))"
    keys = ", ".join(f"'{a}'" for a in attributes)
    values = ", ".join(f"CAST({alias}.{a} AS VARCHAR)" for a in attributes)
    return f"map([{keys}], [{values}])"


def stage_warehouse_outcomes(con: duckdb.DuckDBPyConnection, spec: CohortSpec) -> None:
    """Temp table ``cohort_outcomes``: the cohort label of every validated encounter, when it was observed.

    Encounters that meet a cohort exclusion get no label (they are outside the intended use).
    """
    excluded_any = spec.excluded_sql
    con.execute(f"CREATE OR REPLACE TEMP VIEW encounter_base AS {features.cohort_rows_sql(spec)}")
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE cohort_outcomes AS
        SELECT b.encounter_id,
               CASE WHEN ({excluded_any}) THEN NULL ELSE CAST(({spec.target_sql}) AS INTEGER) END AS label,
               ({excluded_any}) AS excluded,
               'warehouse:' || b.extract_id AS label_source,
               x.landed_at AS label_observed_at,
               {_groups_sql(spec, "b")} AS groups
        FROM encounter_base b LEFT JOIN raw.extracts x ON x.source = ? AND x.extract_id = b.extract_id""",
        [spec.source],
    )


def read_labels_file(path: Path) -> pd.DataFrame:
    """``encounter_id,label[,observed_at]`` (label 0/1; observed_at ISO UTC, default: the file's mtime)."""
    path = Path(path)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"encounter_id", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path.name}: missing column(s) {', '.join(sorted(missing))}")
        rows = list(reader)
    frame = pd.DataFrame(rows, columns=list(reader.fieldnames or []))
    try:
        frame["encounter_id"] = frame["encounter_id"].astype("int64")
        frame["label"] = frame["label"].astype("int64")
    except ValueError as exc:
        raise ValueError(f"{path.name}: encounter_id and label must be integers") from exc
    if not frame["label"].isin([0, 1]).all():
        raise ValueError(f"{path.name}: label must be 0 or 1")
    default = datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(tzinfo=None)
    if "observed_at" in frame.columns:
        observed = pd.to_datetime(frame["observed_at"].replace("", None), utc=True, errors="raise")
        frame["observed_at"] = observed.dt.tz_convert(None).fillna(default)
    else:
        frame["observed_at"] = default
    return frame[["encounter_id", "label", "observed_at"]].drop_duplicates("encounter_id", keep="last")


@dataclass(frozen=True)
class LabelJoinSummary:
    cohort: str
    label_delay_days: float
    predictions: int
    labelled: int
    newly_labelled: int
    awaiting_delay: int          # outcome observed, delay not yet elapsed
    awaiting_outcome: int        # no outcome observed yet
    excluded: int                # outcome says the encounter is outside the cohort
    labels_file_rows: int = 0

    @property
    def label_coverage(self) -> float:
        return self.labelled / self.predictions if self.predictions else 0.0


def join_labels(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    *,
    label_delay_days: float = DEFAULT_LABEL_DELAY_DAYS,
    labels_file: Path | None = None,
    now: datetime | None = None,
) -> LabelJoinSummary:
    """Attach outcomes that have arrived (and whose delay has elapsed) to production predictions."""
    if label_delay_days < 0:
        raise ValueError("label_delay_days must be >= 0")
    ensure_tables(con)
    now = now or utc_now()
    delay = timedelta(days=label_delay_days)
    predictions_sql, params = production_predictions_sql(con, spec.name)
    stage_warehouse_outcomes(con, spec)
    file_rows = 0
    if labels_file is not None:
        labels = read_labels_file(labels_file)
        file_rows = len(labels)
        con.register("labels_file_rows", labels)
        try:
            con.execute(
                """CREATE OR REPLACE TEMP TABLE file_outcomes AS
                   SELECT l.encounter_id, CAST(l.label AS INTEGER) AS label, FALSE AS excluded,
                          'labels_file' AS label_source, CAST(l.observed_at AS TIMESTAMP) AS label_observed_at,
                          o.groups
                   FROM labels_file_rows l LEFT JOIN cohort_outcomes o USING (encounter_id)"""
            )
        finally:
            con.unregister("labels_file_rows")
        con.execute(
            """CREATE OR REPLACE TEMP TABLE all_outcomes AS
               SELECT * FROM file_outcomes
               UNION ALL
               SELECT * FROM cohort_outcomes WHERE encounter_id NOT IN (SELECT encounter_id FROM file_outcomes)"""
        )
    else:
        con.execute("CREATE OR REPLACE TEMP TABLE all_outcomes AS SELECT * FROM cohort_outcomes")
    con.execute(f"CREATE OR REPLACE TEMP TABLE production_predictions AS {predictions_sql}", params)
    before = int(con.execute("SELECT count(*) FROM monitoring.prediction_outcomes WHERE cohort = ?",
                             [spec.name]).fetchall()[0][0])
    with transaction(con):
        con.execute(
            """INSERT INTO monitoring.prediction_outcomes
               SELECT ?, p.source, p.prediction_ref, p.encounter_id, p.model_name, p.model_version, p.predicted_at,
                      p.score, p.flagged, p.operating_threshold, o.label, o.label_source, o.label_observed_at,
                      o.groups, ?
               FROM production_predictions p JOIN all_outcomes o USING (encounter_id)
               WHERE o.label IS NOT NULL AND NOT o.excluded
                 AND o.label_observed_at <= ?
                 AND p.predicted_at + ? <= ?
               ON CONFLICT DO NOTHING""",
            [spec.name, now, now, delay, now],
        )
    counts = con.execute(
        """SELECT count(*),
                  count(*) FILTER (WHERE j.prediction_ref IS NOT NULL),
                  count(*) FILTER (WHERE j.prediction_ref IS NULL AND o.encounter_id IS NOT NULL AND NOT o.excluded
                                   AND o.label IS NOT NULL AND o.label_observed_at <= ?),
                  count(*) FILTER (WHERE j.prediction_ref IS NULL AND (o.encounter_id IS NULL OR o.label_observed_at > ?)),
                  count(*) FILTER (WHERE j.prediction_ref IS NULL AND o.excluded)
           FROM production_predictions p
           LEFT JOIN all_outcomes o USING (encounter_id)
           LEFT JOIN monitoring.prediction_outcomes j
             ON j.cohort = ? AND j.source = p.source AND j.prediction_ref = p.prediction_ref""",
        [now, now, spec.name],
    ).fetchall()[0]
    labelled = int(con.execute("SELECT count(*) FROM monitoring.prediction_outcomes WHERE cohort = ?",
                               [spec.name]).fetchall()[0][0])
    for table in ("production_predictions", "all_outcomes", "cohort_outcomes", "file_outcomes"):
        con.execute(f"DROP TABLE IF EXISTS {table}")
    return LabelJoinSummary(
        cohort=spec.name,
        label_delay_days=float(label_delay_days),
        predictions=int(counts[0]),
        labelled=labelled,
        newly_labelled=labelled - before,
        awaiting_delay=int(counts[2]),
        awaiting_outcome=int(counts[3]),
        excluded=int(counts[4]),
        labels_file_rows=file_rows,
    )


def labelled_predictions(
    con: duckdb.DuckDBPyConnection, cohort: str, *, since: datetime | None = None, source: str | None = None,
    attributes: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Joined production predictions, one column per sensitive attribute in ``attributes`` (aggregate use
    only: callers must never emit rows)."""
    ensure_tables(con)
    clauses, params = ["cohort = ?"], [cohort]
    if since is not None:
        clauses.append("predicted_at >= ?")
        params.append(since)
    if source is not None:
        clauses.append("source = ?")
        params.append(source)
    return con.execute(
        f"""SELECT source, model_name, model_version, predicted_at, score, flagged, operating_threshold, label
                   {"".join(f", groups['{a}'] AS {a}" for a in attributes)}
            FROM monitoring.prediction_outcomes WHERE {' AND '.join(clauses)} ORDER BY predicted_at, prediction_ref""",
        params,
    ).df()
