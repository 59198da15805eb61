"""Training–serving skew: the features the service was sent against the training features.

Per feature a KS or chi-square test and PSI (:mod:`clinical_mlops.drift.statistics`), and, for
encounters present on both sides, the share whose served value differs from the warehouse's —
the signature of a feature pipeline that disagrees with the training SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import pandas as pd

from clinical_mlops.core import evidence
from clinical_mlops.core.warehouse import insert_frame, table_exists
from clinical_mlops.drift import statistics as drift
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.monitoring import settings
from clinical_mlops.monitoring.production._tables import ensure_tables, utc_now

__all__ = ["SkewResult", "training_serving_skew"]


@dataclass(frozen=True)
class SkewResult:
    table: pd.DataFrame
    n_reference: int
    n_served: int
    n_matched: int
    verdict: evidence.Status         # pass | fail | insufficient_evidence
    reason: str
    skewed_features: tuple[str, ...] = field(default=())

    @property
    def evidence(self) -> evidence.Evidence:
        return evidence.Evidence(self.verdict, self.reason)


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
    window_days: float = settings.SKEW_WINDOW_DAYS,
    min_served: int = settings.MIN_SERVED,
    max_mismatch_rate: float = settings.MAX_MISMATCH_RATE,
    policy_sha256: str | None = None,
    now: datetime | None = None,
    store: bool = True,
) -> SkewResult:
    """Served features (prediction log) against the training features, per feature.

    A feature is skewed when its served distribution differs from training both significantly
    and materially (the drift policy's alpha, correction and PSI threshold), or when more than
    ``max_mismatch_rate`` of the encounters seen on both sides were served a different value.
    """
    now = now or utc_now()
    settings = drift_settings or drift.DriftSettings()
    since = now - timedelta(days=window_days)
    if not all(table_exists(con, t) for t in ("monitoring.prediction_log", spec.features_table, "ml.splits")):
        return SkewResult(pd.DataFrame(), 0, 0, 0, evidence.INSUFFICIENT, "no served or no training features yet")
    served_sql = _served_features_sql(spec)
    n_served = int(con.execute(f"SELECT count(*) FROM ({served_sql})", [spec.name, since]).fetchall()[0][0])
    if n_served < min_served:
        return SkewResult(pd.DataFrame(), 0, n_served, 0, evidence.INSUFFICIENT,
                          f"{n_served} served requests in the last {window_days:g} days (need {min_served})")
    n_ref, n_cur = drift.stage_populations(
        con, _training_features_sql(spec), served_sql, list(spec.features),
        reference_params=[spec.name], current_params=[spec.name, since], table="skew_population",
    )
    if n_ref == 0:
        con.execute("DROP TABLE IF EXISTS skew_population")
        return SkewResult(pd.DataFrame(), 0, n_cur, 0, evidence.INSUFFICIENT,
                          "no training-split features to compare the served features with")
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
    verdict = evidence.FAIL if skewed else evidence.PASS if not table.empty else evidence.INSUFFICIENT
    reason = (f"{len(skewed)} of {len(table)} features skewed: {', '.join(skewed[:8])}" if skewed
              else f"no feature skewed across {len(table)} features ({n_cur} served, {n_matched} matched)"
              if not table.empty else "no feature could be compared")
    if store and not table.empty:
        ensure_tables(con)
        stored = table.assign(computed_at=now, cohort=spec.name, policy_sha256=policy_sha256)
        insert_frame(con, "monitoring.serving_skew", stored, view="skew_rows")
    return SkewResult(table, n_ref, n_cur, n_matched, verdict, reason, skewed)
