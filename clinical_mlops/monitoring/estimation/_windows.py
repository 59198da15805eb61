"""Monitoring windows: a cohort's production predictions per extract (batch) or per period (service).

A window holds the predictions of **one** model version: an extract (or period) that two versions
served becomes two windows. Each window carries its label delay and when its labels are due
(its last prediction plus the delay), how many of its rows already have a joined outcome
(``monitoring.prediction_outcomes``), and its rows for aggregate use only: encounter id, score,
flagged, label (missing until joined) and the cohort's sensitive attributes, read from
``features.<cohort>`` by encounter id, else from the outcome's ``groups``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd

from clinical_mlops.core.warehouse import table_exists
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.monitoring.production import DEFAULT_LABEL_DELAY_DAYS

__all__ = ["PERIODS", "Window", "windows"]

PERIODS = ("day", "week", "month")
"""Periods a service window may span (``date_trunc`` units); batch windows are always per extract."""

DEFAULT_THRESHOLD = 0.5
"""The operating threshold of a window whose predictions recorded none (as production monitoring does)."""

_SPAN = {"day": pd.Timedelta(days=1), "week": pd.Timedelta(days=7), "month": pd.offsets.MonthBegin(1)}


@dataclass(frozen=True)
class Window:
    """One window of production predictions of one model version (rows for aggregates only)."""

    cohort: str
    window_id: str
    kind: str                  # extract | period
    source: str                # batch | online
    start: datetime
    end: datetime
    model_name: str
    model_version: str
    n: int
    n_labelled: int
    threshold: float
    label_delay_days: float
    labels_due_at: datetime
    extract_id: str | None = None
    rows: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False, compare=False)

    @property
    def labelled(self) -> pd.DataFrame:
        """The rows whose outcome has been joined."""
        return self.rows[self.rows["label"].notna()].reset_index(drop=True)

    def summary(self) -> dict:
        """The window's aggregate description (no rows)."""
        return {"window_id": self.window_id, "kind": self.kind, "source": self.source, "start": self.start,
                "end": self.end, "model_name": self.model_name, "model_version": self.model_version, "n": self.n,
                "n_labelled": self.n_labelled, "threshold": self.threshold,
                "label_delay_days": self.label_delay_days, "labels_due_at": self.labels_due_at,
                "extract_id": self.extract_id}


def _predictions_sql(con: duckdb.DuckDBPyConnection, period: str) -> tuple[str, list]:
    parts: list[str] = []
    params: list = []
    if table_exists(con, "ml.batch_predictions"):
        parts.append(
            """SELECT 'batch' AS source, 'extract' AS kind, extract_id AS window_key, extract_id,
                      extract_id || ':' || CAST(encounter_id AS VARCHAR) || ':' || model_version AS prediction_ref,
                      encounter_id, model_name, model_version, predicted_at, score, flagged, operating_threshold
               FROM ml.batch_predictions WHERE cohort = $cohort""")
    if table_exists(con, "monitoring.prediction_log"):
        parts.append(
            f"""SELECT 'online' AS source, 'period' AS kind,
                       strftime(date_trunc('{period}', logged_at), '%Y-%m-%d') AS window_key,
                       NULL::VARCHAR AS extract_id, entry_hash AS prediction_ref, encounter_id, model_name,
                       model_version, logged_at AS predicted_at, risk AS score, flagged, operating_threshold
                FROM monitoring.prediction_log
                WHERE cohort = $cohort AND kind = 'prediction' AND encounter_id IS NOT NULL AND risk IS NOT NULL""")
    return " UNION ALL ".join(parts), params


def _rows(con: duckdb.DuckDBPyConnection, spec: CohortSpec, period: str) -> pd.DataFrame:
    sql, _ = _predictions_sql(con, period)
    attributes = list(dict.fromkeys(spec.sensitive_attributes))
    if not sql:
        return pd.DataFrame()
    has_outcomes = table_exists(con, "monitoring.prediction_outcomes")
    has_features = table_exists(con, spec.features_table)
    outcome_join = ("LEFT JOIN monitoring.prediction_outcomes o ON o.cohort = $cohort AND o.source = p.source "
                    "AND o.prediction_ref = p.prediction_ref") if has_outcomes else ""
    feature_join = (f"LEFT JOIN (SELECT encounter_id, {', '.join(f'any_value({a}) AS {a}' for a in attributes)} "
                    f"FROM {spec.features_table} GROUP BY encounter_id) f ON f.encounter_id = p.encounter_id"
                    if has_features and attributes else "")

    def attribute(a: str) -> str:
        sources = ([f"CAST(f.{a} AS VARCHAR)"] if feature_join else []) + ([f"o.groups['{a}']"] if has_outcomes else [])
        return f"coalesce({', '.join(sources)}) AS {a}" if sources else f"NULL::VARCHAR AS {a}"

    label = "o.label" if has_outcomes else "NULL::INTEGER"
    select = ", ".join(["p.*", f"{label} AS label", *(attribute(a) for a in attributes)])
    return con.execute(
        f"SELECT {select} FROM ({sql}) p {outcome_join} {feature_join} "
        "ORDER BY p.source, p.window_key, p.model_name, p.model_version, p.predicted_at, p.prediction_ref",
        {"cohort": spec.name},
    ).df()


def windows(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    *,
    period: str | None = None,
    label_delay_days: float = DEFAULT_LABEL_DELAY_DAYS,
) -> list[Window]:
    """The cohort's production windows, oldest first: batch predictions per extract, service predictions
    per ``period`` (``day | week | month``; default ``week``), each split by model version."""
    period = period or "week"
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")
    frame = _rows(con, spec, period)
    if frame.empty:
        return []
    attributes = list(dict.fromkeys(spec.sensitive_attributes))
    out: list[Window] = []
    keys = ["source", "kind", "window_key", "model_name", "model_version"]
    for (source, kind, key, model_name, model_version), part in frame.groupby(keys, sort=False, dropna=False):
        thresholds = part["operating_threshold"].dropna()
        threshold = float(thresholds.iloc[-1]) if len(thresholds) else DEFAULT_THRESHOLD
        score = part["score"].to_numpy(dtype=float)
        flagged = part["flagged"].astype("boolean").fillna(pd.Series(score >= threshold, index=part.index))
        rows = pd.DataFrame({
            "encounter_id": part["encounter_id"].to_numpy(dtype=np.int64), "score": score,
            "flagged": flagged.to_numpy(dtype=bool), "label": part["label"].astype("Float64").to_numpy(
                dtype=float, na_value=np.nan),
            **{a: part[a].to_numpy(dtype=object) for a in attributes},
        })
        if kind == "period":
            start = pd.Timestamp(key).to_pydatetime()
            end = (pd.Timestamp(key) + _SPAN[period]).to_pydatetime()
            window_id = f"{period}:{key}:{model_name}:v{model_version}"
        else:
            start = part["predicted_at"].min().to_pydatetime()
            end = part["predicted_at"].max().to_pydatetime()
            window_id = f"extract:{key}:{model_name}:v{model_version}"
        last = part["predicted_at"].max().to_pydatetime()
        out.append(Window(
            cohort=spec.name, window_id=window_id, kind=kind, source=source, start=start, end=end,
            model_name=str(model_name), model_version=str(model_version), n=len(rows),
            n_labelled=int(rows["label"].notna().sum()), threshold=threshold,
            label_delay_days=float(label_delay_days), labels_due_at=last + timedelta(days=float(label_delay_days)),
            extract_id=None if kind == "period" else str(key), rows=rows,
        ))
    out.sort(key=lambda w: (w.start, w.window_id))
    return out
