"""Predictions as numbers for the bootstrap: labels, scores and group codes, straight from DuckDB."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np

from clinical_mlops.core.warehouse import quote_identifier as _quote

__all__ = ["coded_predictions"]


def coded_predictions(
    con: duckdb.DuckDBPyConnection,
    source_sql: str,
    params: Sequence[object],
    attributes: Sequence[str],
    *,
    missing: str | None,
    order_by: str = "encounter_id",
) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[np.ndarray, list[str]]]]:
    """Labels, scores and each attribute as (integer codes, sorted text labels), fetched as numbers.

    ``source_sql`` selects ``label``, ``score``, ``order_by`` and the attributes. Codes index the
    attribute's distinct values as text, sorted (DuckDB's binary collation, the same order as
    Python's ``sorted``); a missing value becomes ``missing`` or, with ``missing=None``, code -1.
    No string column is materialised in Python: only the distinct values are.
    """
    text = {a: f"CAST({_quote(a)} AS VARCHAR)" if missing is None
            else f"coalesce(CAST({_quote(a)} AS VARCHAR), '{missing}')" for a in attributes}
    codes = ", ".join(
        f"CASE WHEN {expr} IS NULL THEN -1 ELSE CAST(dense_rank() OVER (ORDER BY {expr}) - 1 AS INTEGER) END "
        f"AS {_quote('code_' + a)}" for a, expr in text.items()
    )
    arrays = con.execute(
        f"SELECT CAST(label AS DOUBLE) AS label, CAST(score AS DOUBLE) AS score{', ' + codes if codes else ''} "
        f"FROM ({source_sql}) AS source_rows ORDER BY {_quote(order_by)}",
        list(params),
    ).fetchnumpy()
    out: dict[str, tuple[np.ndarray, list[str]]] = {}
    for a, expr in text.items():
        labels = [str(r[0]) for r in con.execute(
            f"SELECT DISTINCT {expr} AS v FROM ({source_sql}) AS source_rows WHERE v IS NOT NULL ORDER BY v",
            list(params)).fetchall()]
        out[a] = (np.asarray(arrays["code_" + a], dtype=np.int64), labels)
    return np.asarray(arrays["label"], dtype=np.float64), np.asarray(arrays["score"], dtype=np.float64), out
