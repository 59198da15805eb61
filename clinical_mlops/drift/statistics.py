"""Drift between a reference population and a new extract: per feature, in predictions, in the target.

Every statistic is computed over the *full* data, not a sample. Both populations are staged
once in a DuckDB temp table (``_side`` 0 = reference, 1 = current); for each feature one
``GROUP BY`` returns the value counts on each side, and everything else is vectorised numpy
over those counts (a feature has at most a few hundred distinct values, so the heavy part is
the scan, which DuckDB does column by column):

* numeric features: two-sample Kolmogorov–Smirnov. D is the largest gap between the two
  empirical CDFs, read exactly off the merged value counts; the p-value is Smirnov's
  asymptotic distribution as in ``scipy.stats.ks_2samp(method="asymp")`` (conservative when
  values are tied, as counts are);
* categorical features: Pearson's chi-square on the 2 x k table of counts; categories whose
  expected count is under 5 on either side are pooled so the approximation holds;
* population stability index (PSI) for both: numeric values binned at the reference's
  deciles, categorical values per category, empty cells floored at 1e-4;
* p-values corrected for multiple comparisons across the features (Benjamini–Hochberg by
  default; Holm, Bonferroni or none as the policy says).

A feature **drifts** when its test is significant after the correction (adjusted p below
``alpha``), so on a resample of the reference population the chance of flagging any feature
stays near ``alpha``. Its shift is **material** when the PSI reaches ``psi_threshold``: on
extracts of hundreds of thousands of rows a test flags shifts too small to matter, and the PSI
column (and the ``material`` flag) says how large each one is. The **dataset** drifts when the
share of drifting features reaches ``dataset_drift_share``. With ``require_material`` a feature
must be both significant and material to count. The tests use one encounter per patient and
side (a patient's encounters are not independent draws; counting all of them made resamples of
one population flag age in 8 of 30 seeds at p < 0.01); PSI, means and shares use every row.
Prediction drift (the model's score distribution and alert rate) and target drift (label
prevalence, where labels exist) are tested the same way and reported beside the verdict.

Results are appended to ``monitoring.drift_runs`` (one row per comparison, with the policy hash)
and ``monitoring.drift_metrics`` (one row per statistic), a time series across extracts. Only
aggregates are stored: counts, statistics, means and category shares — never rows or ids.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import numpy as np
import pandas as pd
from scipy import stats

from clinical_mlops.core.warehouse import quote_identifier as _quote
from clinical_mlops.core.warehouse import transaction

__all__ = [
    "STAGE_TABLE",
    "DriftResult",
    "DriftSettings",
    "FeatureDrift",
    "Reference",
    "ReportFile",
    "adjust_p_values",
    "chi_square_from_counts",
    "compare",
    "current_population",
    "ensure_tables",
    "ks_from_counts",
    "latest_runs",
    "model_record",
    "numeric_psi",
    "psi_from_counts",
    "score_drift",
    "scores_in_chunks",
    "select_reference",
    "stage_populations",
    "store",
    "top_drifted",
    "with_prediction",
]

STAGE_TABLE = "drift_population"
"""Temp table holding both populations, ``_side`` 0 = reference, 1 = current."""

PSI_BINS = 10
PSI_EPSILON = 1e-4
MIN_EXPECTED_COUNT = 5.0
RARE_CATEGORY = "(rare categories pooled)"
NULL_CATEGORY = "(missing)"


@dataclass(frozen=True)
class DriftSettings:
    """The drift section of the governance policy, as the statistics need it."""

    alpha: float = 0.05
    correction: str = "benjamini_hochberg"
    dataset_drift_share: float = 0.30
    psi_threshold: float = 0.20
    severity: str = "warn"
    sample_rows: int = 20_000
    sample_seed: int = 17
    require_material: bool = False
    """Count a feature as drifted only when it is also material (PSI >= psi_threshold). Off by
    default; on for very large extracts, where tests flag shifts too small to act on. Read from
    ``drift.require_material`` when the policy declares it."""

    @classmethod
    def from_policy(cls, drift_policy) -> DriftSettings:
        """From ``Policy.drift`` (``clinical_mlops.governance.policy.DriftPolicy``)."""
        return cls(
            alpha=float(drift_policy.alpha),
            correction=str(drift_policy.correction),
            dataset_drift_share=float(drift_policy.dataset_drift_share),
            psi_threshold=float(drift_policy.psi_threshold),
            severity=str(drift_policy.severity),
            sample_rows=int(drift_policy.evidently_sample_rows),
            sample_seed=int(drift_policy.evidently_sample_seed),
            require_material=bool(getattr(drift_policy, "require_material", False)),
        )


@dataclass(frozen=True)
class FeatureDrift:
    """One drift statistic: a feature, the model's score, or the label."""

    name: str
    kind: str  # feature | prediction | target
    feature_type: str  # numeric | categorical
    test: str  # ks | chi_square
    statistic: float
    p_value: float
    p_value_adjusted: float
    psi: float
    significant: bool
    drifted: bool
    material: bool
    n_reference: int
    n_current: int
    reference_value: float | None = None
    """Numeric: reference mean. Categorical: reference share of ``summary``'s category."""
    current_value: float | None = None
    summary: str = ""
    """Human-readable aggregate, e.g. ``mean 4.31 → 5.02`` or ``share of 'X' 0.19 → 0.44``."""

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class DriftResult:
    """Per-feature drift plus the dataset-level verdict under the settings used."""

    features: tuple[FeatureDrift, ...]
    settings: DriftSettings
    n_reference: int
    n_current: int
    prediction: FeatureDrift | None = None
    target: FeatureDrift | None = None
    prediction_alert_rates: tuple[float, float] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def features_tested(self) -> int:
        return len(self.features)

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.drifted)

    @property
    def material_features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.material)

    @property
    def drift_share(self) -> float:
        return len(self.drifted_features) / self.features_tested if self.features_tested else 0.0

    @property
    def dataset_drift(self) -> bool:
        return self.features_tested > 0 and self.drift_share >= self.settings.dataset_drift_share

    @property
    def prediction_drift(self) -> bool:
        return bool(self.prediction is not None and self.prediction.drifted)

    @property
    def target_drift(self) -> bool:
        return bool(self.target is not None and self.target.drifted)

    def ranked(self) -> list[FeatureDrift]:
        """Features, most shifted first (drifted, then by PSI)."""
        return sorted(self.features, key=lambda f: (not f.drifted, -(f.psi if f.psi == f.psi else -1.0)))


# ---------------------------------------------------------------------------------------------
# statistics from counts (pure numpy)
# ---------------------------------------------------------------------------------------------


def ks_from_counts(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic and asymptotic p-value from counts over the *sorted* merged values.

    Equals ``scipy.stats.ks_2samp(ref, cur, method="asymp")`` on the expanded samples.
    """
    a = np.asarray(reference_counts, dtype=np.float64)
    b = np.asarray(current_counts, dtype=np.float64)
    na, nb = a.sum(), b.sum()
    if na == 0 or nb == 0:
        return float("nan"), float("nan")
    d = float(np.max(np.abs(np.cumsum(a) / na - np.cumsum(b) / nb)))
    m, n = max(na, nb), min(na, nb)
    en = m * n / (m + n)
    p = float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))
    return d, p


def chi_square_from_counts(reference_counts: np.ndarray, current_counts: np.ndarray
                           ) -> tuple[float, float, np.ndarray]:
    """Pearson chi-square (no continuity correction) on a 2 x k table, rare cells pooled.

    Returns the statistic, the p-value and the pooling mask (True = category kept on its own).
    Categories whose expected count is under 5 on either side are pooled into one column; if
    fewer than two columns remain there is nothing to test (statistic 0, p-value 1).
    """
    a = np.asarray(reference_counts, dtype=np.float64)
    b = np.asarray(current_counts, dtype=np.float64)
    na, nb = a.sum(), b.sum()
    if na == 0 or nb == 0:
        return float("nan"), float("nan"), np.ones(a.shape, dtype=bool)
    total = a + b
    n = na + nb
    keep = np.minimum(total * na / n, total * nb / n) >= MIN_EXPECTED_COUNT
    columns_a = list(a[keep])
    columns_b = list(b[keep])
    if (~keep).any() and total[~keep].sum() > 0:
        columns_a.append(a[~keep].sum())
        columns_b.append(b[~keep].sum())
    table = np.array([columns_a, columns_b])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0, keep
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    p = float(stats.chi2.sf(statistic, table.shape[1] - 1))
    return statistic, p, keep


def psi_from_counts(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Population stability index over matching cells, empty cells floored at 1e-4."""
    a = np.asarray(reference_counts, dtype=np.float64)
    b = np.asarray(current_counts, dtype=np.float64)
    if a.sum() == 0 or b.sum() == 0:
        return float("nan")
    p = np.maximum(a / a.sum(), PSI_EPSILON)
    q = np.maximum(b / b.sum(), PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def _decile_bins(values: np.ndarray, reference_counts: np.ndarray) -> np.ndarray:
    """Bin index of each sorted distinct value, with edges at the reference's deciles."""
    cumulative = np.cumsum(reference_counts) / reference_counts.sum()
    probabilities = np.arange(1, PSI_BINS) / PSI_BINS
    positions = np.minimum(np.searchsorted(cumulative, probabilities, side="left"), values.size - 1)
    edges = np.unique(values[positions])
    # a value equal to an edge belongs to the bin ending at that edge
    return np.searchsorted(edges, values, side="left")


def numeric_psi(values: np.ndarray, reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """PSI of a numeric feature over bins at the reference deciles (values sorted, distinct)."""
    if reference_counts.sum() == 0:
        return float("nan")
    bins = _decile_bins(np.asarray(values, dtype=np.float64), np.asarray(reference_counts, dtype=np.float64))
    n_bins = int(bins.max()) + 1 if bins.size else 0
    return psi_from_counts(
        np.bincount(bins, weights=reference_counts, minlength=n_bins),
        np.bincount(bins, weights=current_counts, minlength=n_bins),
    )


def adjust_p_values(p_values: Sequence[float], method: str) -> np.ndarray:
    """Multiple-comparison adjusted p-values: benjamini_hochberg, holm, bonferroni or none.

    NaN p-values (untestable features) stay NaN and do not count towards the family size.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    valid = ~np.isnan(p)
    m = int(valid.sum())
    if m == 0:
        return out
    q = p[valid]
    if method == "none":
        adjusted = q
    elif method == "bonferroni":
        adjusted = np.minimum(q * m, 1.0)
    elif method == "holm":
        order = np.argsort(q, kind="stable")
        scaled = q[order] * (m - np.arange(m))
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    elif method == "benjamini_hochberg":
        order = np.argsort(q, kind="stable")
        scaled = q[order] * m / np.arange(1, m + 1)
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    else:
        raise ValueError(f"unknown multiple-comparison correction '{method}'")
    out[valid] = adjusted
    return out


# ---------------------------------------------------------------------------------------------
# the populations in DuckDB
# ---------------------------------------------------------------------------------------------


def stage_populations(
    con: duckdb.DuckDBPyConnection,
    reference_sql: str,
    current_sql: str,
    columns: Sequence[str],
    *,
    reference_params: Sequence = (),
    current_params: Sequence = (),
    unit: str | None = None,
    order_key: str | None = None,
    table: str = STAGE_TABLE,
) -> tuple[int, int]:
    """Stage both populations (the given columns of two SELECTs) in one temp table; return row counts.

    ``unit`` names the sampling unit (``patient_key``): the tests use one row per unit and side,
    the one with the smallest ``md5(order_key)`` (a deterministic, content-independent choice),
    because a patient's encounters are not independent draws and counting each of them would
    make every test anti-conservative (on synthetic resamples, age flagged at p < 0.01 in 8 of
    30 seeds instead of 0.3). PSI, means and shares use every row.
    """
    selected = [c for c in dict.fromkeys([*columns, *(x for x in (unit, order_key) if x)])]
    cols = ", ".join(_quote(c) for c in selected)
    if unit is None:
        unit_row = "TRUE"
    else:
        order = f"md5(CAST({_quote(order_key or unit)} AS VARCHAR))"
        unit_row = f"row_number() OVER (PARTITION BY _side, {_quote(unit)} ORDER BY {order}) = 1"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT *, {unit_row} AS _unit_row FROM (
            SELECT CAST(0 AS TINYINT) AS _side, {cols} FROM ({reference_sql}) AS reference_rows
            UNION ALL
            SELECT CAST(1 AS TINYINT) AS _side, {cols} FROM ({current_sql}) AS current_rows
        )""",
        [*reference_params, *current_params],
    )
    counts = dict(con.execute(f"SELECT _side, count(*) FROM {table} GROUP BY _side").fetchall())
    return int(counts.get(0, 0)), int(counts.get(1, 0))


def _value_counts(con: duckdb.DuckDBPyConnection, table: str, value_sql: str, where: str = "TRUE"
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sorted distinct values with per-unit counts (tests) and row counts (PSI, means) on each side.

    One scan and one small GROUP BY (value, side, unit flag); the pivot happens in numpy.
    """
    rows = con.execute(
        f"SELECT {value_sql} AS v, _side, _unit_row, count(*) AS n FROM {table} WHERE {where} GROUP BY ALL"
    ).fetchnumpy()
    raw = rows["v"]
    if hasattr(raw, "mask"):  # masked array when the column holds NULLs
        raw = raw.filled(np.nan) if raw.dtype.kind == "f" else raw.data
    values, index = np.unique(np.asarray(raw), return_inverse=True)
    side = np.asarray(rows["_side"]).astype(np.int64)
    unit = np.asarray(rows["_unit_row"]).astype(bool)
    n = np.asarray(rows["n"]).astype(np.float64)
    size = values.size

    def tally(mask: np.ndarray) -> np.ndarray:
        return np.bincount(index[mask], weights=n[mask], minlength=size)

    return (values, tally((side == 0) & unit), tally((side == 1) & unit), tally(side == 0), tally(side == 1))


def _numeric_counts(con: duckdb.DuckDBPyConnection, table: str, column: str) -> tuple[np.ndarray, ...]:
    values, *counts = _value_counts(con, table, f"CAST({_quote(column)} AS DOUBLE)",
                                    f"{_quote(column)} IS NOT NULL")
    return (np.asarray(values, dtype=np.float64), *counts)


def _categorical_counts(con: duckdb.DuckDBPyConnection, table: str, column: str
                        ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    values, *counts = _value_counts(con, table, f"coalesce(CAST({_quote(column)} AS VARCHAR), '{NULL_CATEGORY}')")
    return ([str(v) for v in values], *counts)


def _numeric_drift(name: str, kind: str, values: np.ndarray, unit_a: np.ndarray, unit_b: np.ndarray,
                   a: np.ndarray, b: np.ndarray) -> dict:
    d, p = ks_from_counts(unit_a, unit_b)
    mean_a = float(values @ a / a.sum()) if a.sum() else float("nan")
    mean_b = float(values @ b / b.sum()) if b.sum() else float("nan")
    return dict(
        name=name, kind=kind, feature_type="numeric", test="ks", statistic=d, p_value=p,
        psi=numeric_psi(values, a, b) if values.size else float("nan"),
        n_reference=int(unit_a.sum()), n_current=int(unit_b.sum()),
        reference_value=mean_a, current_value=mean_b, summary=f"mean {mean_a:.4g} → {mean_b:.4g}",
    )


def _categorical_drift(name: str, kind: str, categories: list[str], unit_a: np.ndarray, unit_b: np.ndarray,
                       a: np.ndarray, b: np.ndarray) -> dict:
    statistic, p, keep = chi_square_from_counts(unit_a, unit_b)
    share_a = a / a.sum() if a.sum() else np.zeros_like(a)
    share_b = b / b.sum() if b.sum() else np.zeros_like(b)
    summary, ref_value, cur_value = "", float("nan"), float("nan")
    if keep.any():  # the category (among those large enough to show) whose share moved most
        moved = np.where(keep, np.abs(share_b - share_a), -1.0)
        i = int(np.argmax(moved))
        ref_value, cur_value = float(share_a[i]), float(share_b[i])
        summary = f"share of '{categories[i]}' {ref_value:.3f} → {cur_value:.3f}"
    return dict(
        name=name, kind=kind, feature_type="categorical", test="chi_square", statistic=statistic, p_value=p,
        psi=psi_from_counts(a, b), n_reference=int(unit_a.sum()), n_current=int(unit_b.sum()),
        reference_value=ref_value, current_value=cur_value, summary=summary,
    )


def _decide(raw: list[dict], settings: DriftSettings, *, adjust: bool) -> list[FeatureDrift]:
    p = [r["p_value"] for r in raw]
    adjusted = adjust_p_values(p, settings.correction) if adjust else np.asarray(p, dtype=np.float64)
    out = []
    for r, q in zip(raw, adjusted):
        significant = bool(q == q and q < settings.alpha)
        material = bool(r["psi"] == r["psi"] and r["psi"] >= settings.psi_threshold)
        drifted = significant and (material or not settings.require_material)
        out.append(FeatureDrift(**r, p_value_adjusted=float(q), significant=significant,
                                drifted=drifted, material=material))
    return out


def compare(
    con: duckdb.DuckDBPyConnection,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    settings: DriftSettings,
    label: str | None = None,
    table: str = STAGE_TABLE,
) -> DriftResult:
    """Feature (and, with ``label``, target) drift between the two sides of a staged table."""
    counts = dict(con.execute(f"SELECT _side, count(*) FROM {table} GROUP BY _side").fetchall())
    n_ref, n_cur = int(counts.get(0, 0)), int(counts.get(1, 0))
    if n_ref == 0 or n_cur == 0:
        raise ValueError(f"drift needs rows on both sides (reference {n_ref}, current {n_cur})")
    raw: list[dict] = []
    for column in numeric:
        raw.append(_numeric_drift(column, "feature", *_numeric_counts(con, table, column)))
    for column in categorical:
        raw.append(_categorical_drift(column, "feature", *_categorical_counts(con, table, column)))
    feature_results = _decide(raw, settings, adjust=True)
    target = None
    if label is not None:
        labelled = con.execute(
            f"SELECT count(*) FILTER (WHERE _side = 0 AND {_quote(label)} IS NOT NULL), "
            f"count(*) FILTER (WHERE _side = 1 AND {_quote(label)} IS NOT NULL) FROM {table}"
        ).fetchall()[0]
        if labelled[0] > 0 and labelled[1] > 0:
            counts = _categorical_counts(con, f"(SELECT * FROM {table} WHERE {_quote(label)} IS NOT NULL)", label)
            target_raw = _categorical_drift(label, "target", *counts)
            categories, a, b = counts[0], counts[3], counts[4]
            positive = categories.index("1") if "1" in categories else None
            if positive is not None:
                target_raw.update(reference_value=float(a[positive] / a.sum()), current_value=float(b[positive] / b.sum()),
                                  summary=f"prevalence {a[positive] / a.sum():.4f} → {b[positive] / b.sum():.4f}")
            (target,) = _decide([target_raw], settings, adjust=False)
    return DriftResult(features=tuple(feature_results), settings=settings, n_reference=n_ref, n_current=n_cur,
                       target=target)


def score_drift(reference_scores: np.ndarray, current_scores: np.ndarray, *, threshold: float,
                settings: DriftSettings) -> tuple[FeatureDrift, tuple[float, float]]:
    """Drift of the model's risk scores (KS + PSI) and its alert rates at the operating threshold."""
    ref = np.sort(np.asarray(reference_scores, dtype=np.float64))
    cur = np.sort(np.asarray(current_scores, dtype=np.float64))
    if ref.size == 0 or cur.size == 0:
        raise ValueError("score drift needs scores on both sides")
    values, inverse = np.unique(np.concatenate([ref, cur]), return_inverse=True)
    a = np.bincount(inverse[: ref.size], minlength=values.size).astype(np.float64)
    b = np.bincount(inverse[ref.size:], minlength=values.size).astype(np.float64)
    raw = _numeric_drift("risk_score", "prediction", values, a, b, a, b)
    alert_ref = float((ref >= threshold).mean())
    alert_cur = float((cur >= threshold).mean())
    raw["summary"] += f"; alerts per 100 {100 * alert_ref:.1f} → {100 * alert_cur:.1f}"
    (result,) = _decide([raw], settings, adjust=False)
    return result, (alert_ref, alert_cur)


SCORE_CHUNK_ROWS = 100_000
"""Rows fetched and scored at a time for prediction drift."""


def scores_in_chunks(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object],
                     predict: Callable[[pd.DataFrame], np.ndarray], chunk_rows: int = SCORE_CHUNK_ROWS) -> np.ndarray:
    """``predict`` applied to the rows of ``sql`` streamed in chunks of at most ``chunk_rows``; the scores.

    Only one chunk of rows is in memory at a time; the scores (8 bytes a row) are kept.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    cursor = con.execute(sql, list(params))
    vectors = max(1, chunk_rows // 2048)  # DuckDB vectors hold 2,048 rows
    parts: list[np.ndarray] = []
    while True:
        chunk = cursor.fetch_df_chunk(vectors)
        if chunk.empty:
            break
        for start in range(0, len(chunk), chunk_rows):
            parts.append(np.asarray(predict(chunk.iloc[start:start + chunk_rows].reset_index(drop=True)),
                                    dtype=np.float64))
    return np.concatenate(parts) if parts else np.empty(0)


def with_prediction(result: DriftResult, prediction: FeatureDrift, alert_rates: tuple[float, float]) -> DriftResult:
    """The same result with prediction drift attached."""
    return DriftResult(features=result.features, settings=result.settings, n_reference=result.n_reference,
                       n_current=result.n_current, prediction=prediction, target=result.target,
                       prediction_alert_rates=alert_rates, extra=result.extra)


# ---------------------------------------------------------------------------------------------
# storage: a time series in the monitoring schema
# ---------------------------------------------------------------------------------------------

DDL: tuple[str, ...] = (
    "CREATE SCHEMA IF NOT EXISTS monitoring",
    """CREATE TABLE IF NOT EXISTS monitoring.drift_runs (
    drift_run_id VARCHAR PRIMARY KEY,
    computed_at TIMESTAMP NOT NULL,         -- UTC
    cohort VARCHAR NOT NULL,
    extract_id VARCHAR NOT NULL,
    reference_kind VARCHAR NOT NULL,        -- champion | latest_candidate | explicit
    reference_model VARCHAR,
    reference_version VARCHAR,
    reference_extracts_json VARCHAR NOT NULL,
    reference_rows BIGINT NOT NULL,
    current_rows BIGINT NOT NULL,
    features_tested INTEGER NOT NULL,
    features_drifted INTEGER NOT NULL,
    features_material INTEGER NOT NULL,
    drift_share DOUBLE NOT NULL,
    dataset_drift BOOLEAN NOT NULL,
    prediction_drift BOOLEAN,
    target_drift BOOLEAN,
    alpha DOUBLE NOT NULL,
    correction VARCHAR NOT NULL,
    psi_threshold DOUBLE NOT NULL,
    dataset_drift_share DOUBLE NOT NULL,
    severity VARCHAR NOT NULL,
    policy_sha256 VARCHAR NOT NULL,
    report_path VARCHAR,
    report_sha256 VARCHAR,
    report_sample_rows BIGINT,
    report_sample_seed BIGINT,
    details_json VARCHAR
)""",
    """CREATE TABLE IF NOT EXISTS monitoring.drift_metrics (
    drift_run_id VARCHAR NOT NULL,
    computed_at TIMESTAMP NOT NULL,
    cohort VARCHAR NOT NULL,
    extract_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,                  -- feature | prediction | target
    feature VARCHAR NOT NULL,
    feature_type VARCHAR NOT NULL,          -- numeric | categorical
    test VARCHAR NOT NULL,                  -- ks | chi_square
    statistic DOUBLE,
    p_value DOUBLE,
    p_value_adjusted DOUBLE,
    psi DOUBLE,
    significant BOOLEAN NOT NULL,
    drifted BOOLEAN NOT NULL,
    material BOOLEAN NOT NULL,              -- psi >= psi_threshold
    n_reference BIGINT NOT NULL,
    n_current BIGINT NOT NULL,
    reference_value DOUBLE,
    current_value DOUBLE,
    summary VARCHAR
)""",
)


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for statement in DDL:
        con.execute(statement)


@dataclass(frozen=True)
class Reference:
    """What the current extract was compared against."""

    kind: str  # champion | latest_candidate | explicit
    model_name: str | None
    model_version: str | None
    extracts: tuple[str, ...]


@dataclass(frozen=True)
class ReportFile:
    path: str
    sha256: str
    sample_rows: int
    sample_seed: int


def _nan_to_none(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def store(
    con: duckdb.DuckDBPyConnection,
    result: DriftResult,
    *,
    cohort: str,
    extract_id: str,
    reference: Reference,
    policy_sha256: str,
    report: ReportFile | None = None,
    details: dict | None = None,
) -> str:
    """Append one comparison to ``monitoring.drift_runs`` / ``drift_metrics``; return its id."""
    ensure_tables(con)
    run_id = uuid.uuid4().hex
    now = datetime.now(UTC).replace(tzinfo=None)
    s = result.settings
    rows = [*result.features, *(x for x in (result.prediction, result.target) if x is not None)]
    with transaction(con):
        con.execute(
            "INSERT INTO monitoring.drift_runs VALUES (" + ", ".join(["?"] * 28) + ")",
            [
                run_id, now, cohort, extract_id, reference.kind, reference.model_name, reference.model_version,
                json.dumps(list(reference.extracts)), result.n_reference, result.n_current,
                result.features_tested, len(result.drifted_features), len(result.material_features),
                result.drift_share, result.dataset_drift,
                None if result.prediction is None else result.prediction_drift,
                None if result.target is None else result.target_drift,
                s.alpha, s.correction, s.psi_threshold, s.dataset_drift_share, s.severity, policy_sha256,
                None if report is None else report.path, None if report is None else report.sha256,
                None if report is None else report.sample_rows, None if report is None else report.sample_seed,
                json.dumps(details or {}, sort_keys=True, default=str),
            ],
        )
        con.executemany(
            "INSERT INTO monitoring.drift_metrics VALUES (" + ", ".join(["?"] * 20) + ")",
            [
                [run_id, now, cohort, extract_id, f.kind, f.name, f.feature_type, f.test, _nan_to_none(f.statistic),
                 _nan_to_none(f.p_value), _nan_to_none(f.p_value_adjusted), _nan_to_none(f.psi), f.significant,
                 f.drifted, f.material, f.n_reference, f.n_current, _nan_to_none(f.reference_value),
                 _nan_to_none(f.current_value), f.summary]
                for f in rows
            ],
        )
    return run_id


def latest_runs(con: duckdb.DuckDBPyConnection, cohort: str) -> list[dict]:
    """The most recent drift comparison of each extract of a cohort, newest first ([] if none)."""
    from clinical_mlops.core.warehouse import table_exists

    if not table_exists(con, "monitoring.drift_runs"):
        return []
    cursor = con.execute(
        """SELECT * FROM monitoring.drift_runs WHERE cohort = ?
           QUALIFY row_number() OVER (PARTITION BY extract_id ORDER BY computed_at DESC) = 1
           ORDER BY computed_at DESC""",
        [cohort],
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def top_drifted(con: duckdb.DuckDBPyConnection, drift_run_id: str, limit: int = 5) -> list[dict]:
    """The most shifted features of one stored comparison (drifted first, then by PSI)."""
    cursor = con.execute(
        """SELECT feature, test, statistic, p_value_adjusted, psi, drifted, material, summary
           FROM monitoring.drift_metrics WHERE drift_run_id = ? AND kind = 'feature'
           ORDER BY drifted DESC, psi DESC NULLS LAST LIMIT ?""",
        [drift_run_id, limit],
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


# ---------------------------------------------------------------------------------------------
# the populations of a cohort: reference (the champion's training rows) and one extract
# ---------------------------------------------------------------------------------------------


def model_record(con: duckdb.DuckDBPyConnection, model_name: str, version: str | None) -> dict | None:
    from clinical_mlops.core.warehouse import table_exists

    if not table_exists(con, "ml.model_versions"):
        return None
    if version is None:
        sql = "SELECT * FROM ml.model_versions WHERE model_name = ? ORDER BY registered_at DESC, " \
              "TRY_CAST(model_version AS INTEGER) DESC LIMIT 1"
        params = [model_name]
    else:
        sql, params = "SELECT * FROM ml.model_versions WHERE model_name = ? AND model_version = ?", [model_name, version]
    cursor = con.execute(sql, params)
    rows = cursor.fetchall()
    return dict(zip([d[0] for d in cursor.description], rows[0])) if rows else None


def select_reference(con: duckdb.DuckDBPyConnection, cohort: str, features_table: str, extract_id: str,
                     model_name: str) -> tuple[Reference, str, list]:
    """The reference population for an extract, as (description, SQL, parameters).

    The champion's training rows (train split, extracts it was trained on); with no champion,
    the latest registered version's; with no model at all, every extract landed before this one.
    """
    from clinical_mlops.registry.aliases import CHAMPION, current_alias

    champion = current_alias(con, model_name, CHAMPION)
    row = model_record(con, model_name, champion) if champion else None
    kind = "champion"
    if row is None:
        row, kind = model_record(con, model_name, None), "latest_candidate"
    if row is not None:
        extracts = tuple(e["extract_id"] for e in json.loads(row["input_extracts_json"]))
        sql = (f"SELECT f.* FROM {features_table} f JOIN ml.splits s ON s.cohort = ? AND s.encounter_id = f.encounter_id "
               "WHERE s.split = 'train' AND list_contains(?, f.extract_id)")
        return Reference(kind, model_name, str(row["model_version"]), extracts), sql, [cohort, list(extracts)]
    earlier = tuple(r[0] for r in con.execute(
        """SELECT extract_id FROM raw.extracts WHERE status = 'landed' AND extract_id <> ?
             AND landed_at < (SELECT landed_at FROM raw.extracts WHERE extract_id = ?) ORDER BY landed_at""",
        [extract_id, extract_id],
    ).fetchall())
    sql = f"SELECT f.* FROM {features_table} f WHERE list_contains(?, f.extract_id)"
    return Reference("earlier_extracts", None, None, earlier), sql, [list(earlier)]


def current_population(features_table: str, extract_id: str) -> tuple[str, list]:
    """SQL (and parameters) of one extract's rows in a cohort's feature table."""
    return f"SELECT * FROM {features_table} WHERE extract_id = ?", [extract_id]
