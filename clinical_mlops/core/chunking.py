"""Bounded-memory helpers shared by the data stages: DuckDB limits and frames streamed in chunks.

DuckDB's default memory limit is 80% of the machine's RAM; at tens of millions of rows a
stage would take it all. :func:`bound_memory` caps it (and lets DuckDB spill to disk) on the
connection a stage uses; :func:`iter_frames` streams a query as pandas frames of at most
``chunk_rows`` rows instead of materialising the whole result.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_MEMORY_LIMIT",
    "MEMORY_LIMIT_ENV",
    "bound_memory",
    "iter_frames",
]

DEFAULT_CHUNK_ROWS = 200_000
MEMORY_LIMIT_ENV = "CLINICAL_MLOPS_DUCKDB_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "3GB"
"""DuckDB's buffer cap per connection unless ``CLINICAL_MLOPS_DUCKDB_MEMORY_LIMIT`` says otherwise: the
one place it is set (every warehouse connection, every stage, the benchmark)."""
_VECTOR_ROWS = 2048


def bound_memory(
    con: duckdb.DuckDBPyConnection, *, memory_limit: str | None = None, temp_directory: Path | None = None,
    preserve_insertion_order: bool = False,
) -> None:
    """Cap DuckDB's buffer memory on this connection and let large operators spill to disk.

    ``preserve_insertion_order = false`` lets scans and inserts stream without buffering to
    keep row order; every query of the validation, feature and training stages that needs an
    order says ``ORDER BY``. Landing must keep it true: its row numbers follow file order.
    """
    limit = memory_limit or os.environ.get(MEMORY_LIMIT_ENV, DEFAULT_MEMORY_LIMIT)
    con.execute(f"SET memory_limit = '{_checked_size(limit)}'")
    con.execute(f"SET preserve_insertion_order = {'true' if preserve_insertion_order else 'false'}")
    if temp_directory is not None:
        escaped = str(temp_directory).replace("'", "''")
        con.execute(f"SET temp_directory = '{escaped}'")


def _checked_size(value: str) -> str:
    """Accept sizes such as ``3GB`` or ``512MiB`` only, so the value is safe in SQL."""
    text = value.strip()
    if not text or not all(ch.isalnum() or ch == "." for ch in text):
        raise ValueError(f"{MEMORY_LIMIT_ENV} must look like '3GB', got an invalid value")
    return text


def iter_frames(
    con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """Run ``sql`` on a cursor of ``con`` and yield its result as frames of about ``chunk_rows`` rows.

    Frames have the dtypes ``.df()`` would give (DuckDB's own chunked fetch, in whole vectors
    of 2,048 rows). The cursor is a separate connection to the same database, so the caller
    may keep using ``con`` while the stream is open (it sees committed data only).
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    vectors = max(1, -(-chunk_rows // _VECTOR_ROWS))
    cursor = con.cursor()
    try:
        result = cursor.execute(sql, params or [])
        while True:
            frame = result.fetch_df_chunk(vectors)
            if frame.empty:
                return
            yield frame
    finally:
        cursor.close()
