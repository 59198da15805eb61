"""Production monitoring: outcomes joined to predictions as they arrive, performance and fairness
over time, and training–serving skew.

**Predictions** come from two places: the scoring service's prediction log once ingested
(``monitoring.prediction_log``, requests that named their ``encounter_id``) and batch scoring
(``ml.batch_predictions``).

**Outcomes** arrive later. For the Diabetes 130 extracts the outcome of an encounter is its
``readmitted`` field in a validated extract, turned into the cohort's label with the cohort's
own target SQL (the same definition as training); an operator can also supply a labels file
(CSV: ``encounter_id,label[,observed_at]``) that takes precedence. An outcome is attached only
when it has been observed (its extract has landed, or its ``observed_at`` has passed) *and*
the label delay has elapsed since the prediction (default 30 days: a 30-day readmission is not
known before). Joined rows are kept in ``monitoring.prediction_outcomes`` and never rewritten.

**Performance over time** (``monitoring.production_metrics``): per period and model version,
AUROC, AUPRC, Brier, recall, precision and alerts per 100 with bootstrap CIs
(``clinical_mlops.evaluation.metrics``). **Fairness** on labelled production predictions applies the
governance policy with the same code as the held-out audit (``clinical_mlops.fairness.audit``),
stored with ``model_role = 'production'``. **Skew** compares the features the service was sent
with the training features: per feature a KS or chi-square test and PSI (reusing
``clinical_mlops.drift.statistics``), and, for encounters present on both sides, the share whose served
value differs from the warehouse's — the signature of a feature pipeline that disagrees with
the training SQL. Everything stored is aggregate; no row leaves the warehouse.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from clinical_mlops.evaluation import metrics as evaluation
from clinical_mlops.features import build as features
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.core.warehouse import table_exists, transaction

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
    race VARCHAR, gender VARCHAR, age_band VARCHAR,
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

REPORTED_METRICS = ("auroc", "auprc", "brier", "ece", "tpr", "precision", "selection_rate", "prevalence")


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in (OUTCOMES_DDL, PRODUCTION_METRICS_DDL, SKEW_DDL):
        con.execute(ddl)


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# ---------------------------------------------------------------------------------------------
# predictions and outcomes
# ---------------------------------------------------------------------------------------------


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
            """SELECT 'batch' AS source, extract_id || ':' || CAST(encounter_id AS VARCHAR) || ':' || model_version,
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


def stage_warehouse_outcomes(con: duckdb.DuckDBPyConnection, spec: CohortSpec) -> None:
    """Temp table ``cohort_outcomes``: the cohort label of every validated encounter, when it was observed.

    Encounters that meet a cohort exclusion get no label (they are outside the intended use).
    """
    excluded_any = " OR ".join(f"({e.sql})" for e in spec.exclusions) or "FALSE"
    con.execute(f"CREATE OR REPLACE TEMP VIEW encounter_base AS {features.encounter_base_sql()}")
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE cohort_outcomes AS
        SELECT b.encounter_id,
               CASE WHEN ({excluded_any}) THEN NULL ELSE CAST(({spec.target_sql}) AS INTEGER) END AS label,
               ({excluded_any}) AS excluded,
               'warehouse:' || b.extract_id AS label_source,
               x.landed_at AS label_observed_at,
               b.race, b.gender, b.age_band
        FROM encounter_base b LEFT JOIN raw.extracts x ON x.extract_id = b.extract_id"""
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
    label_delay_days: float = 30.0,
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
                          o.race, o.gender, o.age_band
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
                      o.race, o.gender, o.age_band, ?
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
    con: duckdb.DuckDBPyConnection, cohort: str, *, since: datetime | None = None, source: str | None = None
) -> pd.DataFrame:
    """Joined production predictions (aggregate use only: callers must never emit rows)."""
    ensure_tables(con)
    clauses, params = ["cohort = ?"], [cohort]
    if since is not None:
        clauses.append("predicted_at >= ?")
        params.append(since)
    if source is not None:
        clauses.append("source = ?")
        params.append(source)
    return con.execute(
        f"""SELECT source, model_name, model_version, predicted_at, score, flagged, operating_threshold, label,
                   race, gender, age_band
            FROM monitoring.prediction_outcomes WHERE {' AND '.join(clauses)} ORDER BY predicted_at, prediction_ref""",
        params,
    ).df()


# ---------------------------------------------------------------------------------------------
# performance over time
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PerformanceSummary:
    table: pd.DataFrame              # period_start, model_version, n, n_positive, metric, estimate, lower, upper
    current_model: tuple[str, str] | None
    window: dict[str, evaluation.MetricEstimate]
    window_n: int
    window_positives: int
    heldout_auroc: float | None
    verdict: str                     # pass | fail | insufficient_evidence
    reason: str


def heldout_auroc(con: duckdb.DuckDBPyConnection, model_name: str, model_version: str) -> float | None:
    """The model's AUROC on its held-out test split (latest evaluation), if recorded."""
    if not table_exists(con, "ml.evaluation_metrics"):
        return None
    rows = con.execute(
        """SELECT estimate FROM ml.evaluation_metrics
           WHERE model_name = ? AND model_version = ? AND metric = 'auroc' AND attribute = 'overall'
           ORDER BY evaluated_at DESC LIMIT 1""",
        [model_name, str(model_version)],
    ).fetchall()
    if rows and rows[0][0] is not None:
        return float(rows[0][0])
    rows = con.execute(
        "SELECT label, score FROM ml.predictions WHERE model_name = ? AND model_version = ? AND split = 'test'",
        [model_name, str(model_version)],
    ).fetchall()
    if not rows:
        return None
    y = np.array([r[0] for r in rows])
    if y.min() == y.max():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, np.array([r[1] for r in rows])))


def _estimates(frame: pd.DataFrame, threshold: float, n_boot: int, seed: int) -> dict[str, evaluation.MetricEstimate]:
    return evaluation.bootstrap_metrics(
        frame["label"].to_numpy(), frame["score"].to_numpy(), threshold=threshold, n_boot=n_boot, seed=seed,
    )


def performance_over_time(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    *,
    period: str = "week",
    window_days: float = 90.0,
    min_labelled: int = 200,
    auroc_tolerance: float = 0.05,
    n_boot: int = 200,
    seed: int = 13,
    now: datetime | None = None,
    store: bool = True,
) -> PerformanceSummary:
    """Metrics with CIs per period and model version; the verdict judges the current model's window.

    The current model is the version that made the most recent labelled prediction. The verdict
    fails only when the window's AUROC interval lies entirely below the held-out AUROC minus the
    tolerance; with fewer than ``min_labelled`` labelled predictions (or one class) it is
    ``insufficient_evidence``.
    """
    if period not in ("day", "week", "month"):
        raise ValueError("period must be day, week or month")
    now = now or utc_now()
    frame = labelled_predictions(con, spec.name)
    rows = []
    if not frame.empty:
        frame["period_start"] = frame["predicted_at"].dt.to_period({"day": "D", "week": "W-MON", "month": "M"}[period]
                                                                  ).dt.start_time
        for (start, name, version), part in frame.groupby(["period_start", "model_name", "model_version"], sort=True):
            threshold = _threshold(part)
            estimates = _estimates(part, threshold, n_boot if len(part) >= 30 else 0, seed)
            for metric in REPORTED_METRICS:
                e = estimates[metric]
                rows.append((start, period, name, version, len(part), int(part["label"].sum()), metric,
                             e.estimate, e.lower, e.upper))
    current = None
    window: dict[str, evaluation.MetricEstimate] = {}
    window_n = window_pos = 0
    reference = None
    verdict, reason = "insufficient_evidence", "no labelled production predictions yet"
    if not frame.empty:
        last = frame.iloc[-1]
        current = (str(last["model_name"]), str(last["model_version"]))
        part = frame[(frame["model_name"] == current[0]) & (frame["model_version"] == current[1])
                     & (frame["predicted_at"] >= now - timedelta(days=window_days))]
        window_n, window_pos = len(part), int(part["label"].sum()) if len(part) else 0
        reference = heldout_auroc(con, *current)
        if window_n:
            window = _estimates(part, _threshold(part), n_boot, seed)
            for metric in REPORTED_METRICS:
                e = window[metric]
                rows.append((now - timedelta(days=window_days), "window", current[0], current[1], window_n, window_pos,
                             metric, e.estimate, e.lower, e.upper))
        verdict, reason = _performance_verdict(window, window_n, window_pos, reference, min_labelled, auroc_tolerance)
    table = pd.DataFrame(rows, columns=["period_start", "period", "model_name", "model_version", "n", "n_positive",
                                        "metric", "estimate", "lower", "upper"])
    if store and not table.empty:
        ensure_tables(con)
        stored = table.assign(computed_at=now, cohort=spec.name)
        con.register("production_metric_rows", stored)
        try:
            with transaction(con):
                con.execute("INSERT INTO monitoring.production_metrics BY NAME SELECT * FROM production_metric_rows")
        finally:
            con.unregister("production_metric_rows")
    return PerformanceSummary(table, current, window, window_n, window_pos, reference, verdict, reason)


def _threshold(frame: pd.DataFrame) -> float:
    values = frame["operating_threshold"].dropna()
    return float(values.iloc[-1]) if len(values) else 0.5


def _performance_verdict(window, n, positives, reference, min_labelled, tolerance) -> tuple[str, str]:
    if n < min_labelled:
        return "insufficient_evidence", f"{n} labelled predictions in the window (need {min_labelled})"
    if positives == 0 or positives == n:
        return "insufficient_evidence", "the window holds a single outcome class"
    auroc = window.get("auroc")
    if auroc is None or math.isnan(auroc.estimate):
        return "insufficient_evidence", "AUROC undefined in the window"
    if reference is None:
        return "insufficient_evidence", "no held-out AUROC recorded for the model"
    floor = reference - tolerance
    if auroc.upper < floor:
        return "fail", (f"production AUROC {auroc.estimate:.3f} (CI {auroc.lower:.3f}–{auroc.upper:.3f}) lies below "
                        f"the held-out {reference:.3f} minus tolerance {tolerance:g}")
    return "pass", (f"production AUROC {auroc.estimate:.3f} (CI {auroc.lower:.3f}–{auroc.upper:.3f}); held-out "
                    f"{reference:.3f}, tolerance {tolerance:g}")


# ---------------------------------------------------------------------------------------------
# fairness on production predictions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductionFairness:
    model: tuple[str, str] | None
    n: int
    audit: object | None            # fairness.FairnessAudit
    audit_id: str | None
    reason: str = ""


def production_fairness(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    *,
    policy,
    window_days: float = 90.0,
    n_bootstrap: int | None = None,
    now: datetime | None = None,
    store: bool = True,
) -> ProductionFairness:
    """The policy's fairness audit on the current model's labelled production predictions."""
    from clinical_mlops.fairness import audit as fairness

    now = now or utc_now()
    frame = labelled_predictions(con, spec.name, since=now - timedelta(days=window_days))
    if frame.empty:
        return ProductionFairness(None, 0, None, None, "no labelled production predictions in the window")
    last = frame.iloc[-1]
    model = (str(last["model_name"]), str(last["model_version"]))
    part = frame[(frame["model_name"] == model[0]) & (frame["model_version"] == model[1])].reset_index(drop=True)
    for attribute in policy.fairness.attribute_names:
        if attribute in part.columns:
            part[attribute] = part[attribute].fillna("Unknown")
    result = fairness.audit(part, threshold=_threshold(part), policy=policy, n_bootstrap=n_bootstrap)
    audit_id = None
    if store:
        audit_id = fairness.store_audit(con, result, cohort=spec.name, model_name=model[0], model_version=model[1],
                                        model_role="production", evaluated_at=now)
    return ProductionFairness(model, len(part), result, audit_id)


# ---------------------------------------------------------------------------------------------
# training-serving skew
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkewResult:
    table: pd.DataFrame
    n_reference: int
    n_served: int
    n_matched: int
    verdict: str                     # pass | fail | insufficient_evidence
    reason: str
    skewed_features: tuple[str, ...] = field(default=())


def _served_features_sql(spec: CohortSpec) -> str:
    columns = [f"CAST(json_extract(features_json, '$.{c}') AS DOUBLE) AS \"{c}\"" for c in spec.numeric_features]
    columns += [f"json_extract_string(features_json, '$.{c}') AS \"{c}\"" for c in spec.categorical_features]
    return (f"SELECT encounter_id, {', '.join(columns)} FROM monitoring.prediction_log "
            "WHERE cohort = ? AND kind = 'prediction' AND features_json IS NOT NULL AND logged_at >= ?")


def _training_features_sql(spec: CohortSpec) -> str:
    return (f"SELECT f.* FROM {spec.features_table} f JOIN ml.splits s "
            "ON s.cohort = ? AND s.encounter_id = f.encounter_id WHERE s.split = 'train'")


def training_serving_skew(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    *,
    drift_settings=None,
    window_days: float = 30.0,
    min_served: int = 100,
    max_mismatch_rate: float = 0.01,
    policy_sha256: str | None = None,
    now: datetime | None = None,
    store: bool = True,
) -> SkewResult:
    """Served features (prediction log) against the training features, per feature.

    A feature is skewed when its served distribution differs from training both significantly
    and materially (the drift policy's alpha, correction and PSI threshold), or when more than
    ``max_mismatch_rate`` of the encounters seen on both sides were served a different value.
    """
    from clinical_mlops.drift import statistics as drift

    now = now or utc_now()
    settings = drift_settings or drift.DriftSettings()
    since = now - timedelta(days=window_days)
    if not table_exists(con, "monitoring.prediction_log") or not table_exists(con, spec.features_table):
        return SkewResult(pd.DataFrame(), 0, 0, 0, "insufficient_evidence", "no served or no training features yet")
    served_sql = _served_features_sql(spec)
    n_served = int(con.execute(f"SELECT count(*) FROM ({served_sql})", [spec.name, since]).fetchall()[0][0])
    if n_served < min_served:
        return SkewResult(pd.DataFrame(), 0, n_served, 0, "insufficient_evidence",
                          f"{n_served} served requests in the last {window_days:g} days (need {min_served})")
    n_ref, n_cur = drift.stage_populations(
        con, _training_features_sql(spec), served_sql, list(spec.features),
        reference_params=[spec.name], current_params=[spec.name, since], table="skew_population",
    )
    result = drift.compare(con, numeric=spec.numeric_features, categorical=spec.categorical_features,
                           settings=settings, table="skew_population")
    con.execute("DROP TABLE IF EXISTS skew_population")
    # the same encounters on both sides: were they served what the training SQL computes?
    comparisons = []
    for c in spec.numeric_features:
        comparisons.append(f"count(*) FILTER (WHERE abs(s.\"{c}\" - CAST(f.\"{c}\" AS DOUBLE)) > 1e-9 "
                           f"OR (s.\"{c}\" IS NULL) <> (f.\"{c}\" IS NULL)) AS \"{c}\"")
    for c in spec.categorical_features:
        comparisons.append(f"count(*) FILTER (WHERE s.\"{c}\" IS DISTINCT FROM CAST(f.\"{c}\" AS VARCHAR)) AS \"{c}\"")
    cursor = con.execute(
        f"""SELECT count(*) AS n_matched, {', '.join(comparisons)}
            FROM ({served_sql}) s JOIN {spec.features_table} f USING (encounter_id)""",
        [spec.name, since],
    )
    names = [d[0] for d in cursor.description]
    matched = dict(zip(names, cursor.fetchall()[0]))
    n_matched = int(matched.pop("n_matched"))
    rows = []
    for f in result.features:
        mismatches = int(matched.get(f.name, 0))
        rate = mismatches / n_matched if n_matched else None
        shift = bool(f.drifted)
        skewed = shift or (rate is not None and rate > max_mismatch_rate)
        rows.append({
            "feature": f.name, "feature_type": f.feature_type, "test": f.test, "statistic": f.statistic,
            "p_value_adjusted": f.p_value_adjusted, "psi": f.psi, "distribution_shift": shift,
            "n_reference": n_ref, "n_served": n_cur, "n_matched": n_matched, "mismatches": mismatches,
            "mismatch_rate": rate, "skewed": skewed,
        })
    table = pd.DataFrame(rows)
    skewed = tuple(table.loc[table["skewed"], "feature"]) if not table.empty else ()
    verdict = "fail" if skewed else "pass"
    reason = (f"{len(skewed)} of {len(table)} features skewed: {', '.join(skewed[:8])}" if skewed
              else f"no feature skewed across {len(table)} features ({n_cur} served, {n_matched} matched)")
    if store and not table.empty:
        ensure_tables(con)
        stored = table.assign(computed_at=now, cohort=spec.name, policy_sha256=policy_sha256)
        con.register("skew_rows", stored)
        try:
            with transaction(con):
                con.execute("INSERT INTO monitoring.serving_skew BY NAME SELECT * FROM skew_rows")
        finally:
            con.unregister("skew_rows")
    return SkewResult(table, n_ref, n_cur, n_matched, verdict, reason, skewed)


# ---------------------------------------------------------------------------------------------
# plots (aggregates only)
# ---------------------------------------------------------------------------------------------


def plot_over_time(table: pd.DataFrame, metric: str, *, title: str) -> bytes:
    """PNG of one metric per period and model version, with its interval."""
    import io

    from matplotlib.figure import Figure

    rows = table[(table["metric"] == metric) & (table["period"] != "window")].sort_values("period_start")
    fig = Figure(figsize=(6.4, 3.2), dpi=100)
    ax = fig.add_subplot()
    for (name, version), part in rows.groupby(["model_name", "model_version"], sort=True):
        ax.plot(part["period_start"], part["estimate"], marker="o", label=f"{name} v{version}")
        ax.fill_between(part["period_start"], part["lower"], part["upper"], alpha=0.2)
    ax.set_title(title)
    ax.set_ylabel(metric)
    if not rows.empty:
        ax.legend(fontsize="small")
    fig.autofmt_xdate()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()
