"""The populations of a cohort: the reference (the champion's training rows) and one extract, as SQL."""

from __future__ import annotations

import json

import duckdb

from clinical_mlops.core.warehouse import table_exists
from clinical_mlops.drift.statistics._store import Reference
from clinical_mlops.registry.aliases import CHAMPION, current_alias

__all__ = ["current_population", "model_record", "select_reference"]


def model_record(con: duckdb.DuckDBPyConnection, model_name: str, version: str | None) -> dict | None:
    """A row of ``ml.model_versions``: ``version`` of ``model_name``, or its latest registered (None if none)."""
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
                     model_name: str, source: str) -> tuple[Reference, str, list]:
    """The reference population for an extract, as (description, SQL, parameters).

    The champion's training rows (train split, extracts it was trained on); with no champion,
    the latest registered version's; with no model at all, every extract of the source landed before this one.
    """
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
        """SELECT extract_id FROM raw.extracts WHERE source = ? AND status = 'landed' AND extract_id <> ?
             AND landed_at < (SELECT landed_at FROM raw.extracts WHERE source = ? AND extract_id = ?)
           ORDER BY landed_at""",
        [source, extract_id, source, extract_id],
    ).fetchall())
    sql = f"SELECT f.* FROM {features_table} f WHERE list_contains(?, f.extract_id)"
    return Reference("earlier_extracts", None, None, earlier), sql, [list(earlier)]


def current_population(features_table: str, extract_id: str) -> tuple[str, list]:
    """SQL (and parameters) of one extract's rows in a cohort's feature table."""
    return f"SELECT * FROM {features_table} WHERE extract_id = ?", [extract_id]
