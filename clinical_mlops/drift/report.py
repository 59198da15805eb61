"""The human-readable drift report: Evidently's data-drift preset, on a reproducible sample.

Evidently renders a good HTML report but computes on pandas in memory, and its time grows with
the rows (about 11 s for 100k rows x 30 columns on this machine). The statistics that decide
anything are computed on the full data in :mod:`clinical_mlops.drift.statistics`; the HTML is for people,
so above ``sample_rows`` rows per side it is drawn on a sample. The sample is deterministic and
documented: the ``sample_rows`` rows with the smallest ``md5('<seed>:<encounter_id>')`` — the
same seed on the same rows always gives the same report, whatever the row order or thread count.

Evidently is used behind one function, :func:`render_html`; nothing else in the project imports
it. Its usage telemetry is switched off (``DO_NOT_TRACK``) before it is imported. Identifier
columns (encounter, patient) are never passed to it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from clinical_mlops.core.settings import switch_off_telemetry
from clinical_mlops.core.warehouse import quote_identifier as _quote

__all__ = ["EvidentlyReport", "SampledFrames", "render_html", "sampled_frames"]


@dataclass(frozen=True)
class EvidentlyReport:
    path: Path
    sha256: str
    size_bytes: int
    reference_rows: int
    current_rows: int
    drifted_columns: int | None
    drift_share: float | None
    seconds: float


@dataclass(frozen=True)
class SampledFrames:
    reference: pd.DataFrame
    current: pd.DataFrame
    reference_total: int
    current_total: int
    sample_rows: int
    seed: int

    @property
    def sampled(self) -> bool:
        return len(self.reference) < self.reference_total or len(self.current) < self.current_total


def sampled_frames(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: Sequence[str],
    *,
    sample_rows: int,
    seed: int,
    order_key: str = "encounter_id",
) -> SampledFrames:
    """Both sides of a staged drift table (``_side`` 0/1), at most ``sample_rows`` rows each.

    Only ``columns`` are returned (``order_key`` is used for the draw and dropped).
    """
    selected = ", ".join(_quote(c) for c in columns)
    frames, totals = [], []
    for side in (0, 1):
        total = int(con.execute(f"SELECT count(*) FROM {table} WHERE _side = ?", [side]).fetchall()[0][0])
        frames.append(
            con.execute(
                f"""SELECT {selected} FROM {table} WHERE _side = ?
                    ORDER BY md5(? || ':' || CAST({_quote(order_key)} AS VARCHAR)) LIMIT ?""",
                [side, str(seed), int(sample_rows)],
            ).df()
        )
        totals.append(total)
    return SampledFrames(frames[0], frames[1], totals[0], totals[1], int(sample_rows), int(seed))


def render_html(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    path: Path,
    drift_share: float = 0.5,
) -> EvidentlyReport:
    """Run Evidently's ``DataDriftPreset`` on the two frames and save the HTML report at ``path``.

    The frames must hold only the listed columns' data (no identifiers). Returns where the
    report is, its hash, and Evidently's own count of drifted columns (its default per-column
    tests, for comparison with the full-data statistics).
    """
    switch_off_telemetry()
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    numeric, categorical = list(numeric), list(categorical)
    columns = numeric + categorical

    def prepared(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame[columns].copy()
        for c in numeric:
            out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
        for c in categorical:
            out[c] = out[c].astype("string").fillna("(missing)").astype(object)
        return out

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    started = time.perf_counter()
    snapshot = Report([DataDriftPreset(columns=columns, drift_share=drift_share)]).run(
        Dataset.from_pandas(prepared(current), data_definition=definition),
        Dataset.from_pandas(prepared(reference), data_definition=definition),
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    seconds = time.perf_counter() - started
    drifted, share = None, None
    for metric in snapshot.dict().get("metrics", []):
        if str(metric.get("metric_name", "")).startswith("DriftedColumnsCount"):
            value = metric.get("value") or {}
            drifted = int(value["count"]) if "count" in value else None
            share = float(value["share"]) if "share" in value else None
            break
    data = path.read_bytes()
    return EvidentlyReport(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        reference_rows=len(reference),
        current_rows=len(current),
        drifted_columns=drifted,
        drift_share=share,
        seconds=seconds,
    )
