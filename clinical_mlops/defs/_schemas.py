"""Column schemas for the UI, built from the Pandera schemas the tables are validated against.

``dagster/column_schema`` metadata on an asset definition makes Dagster show the table's
columns (name, type, nullability, uniqueness, checks) on the asset's page. The columns and
their checks come from the Pandera schema through dagster-pandera, so the UI shows exactly what
validation enforces:

* :func:`feature_table_schema` — a cohort's ``encounter_features`` table is the Pandera feature
  schema itself (``strict=True``: no other column), shown as dagster-pandera shows it, built from the
  same declared columns (:mod:`clinical_mlops.features.columns`) so the Definitions load without
  Pandera; :func:`pandera_table_schema` is dagster-pandera's own conversion, which the tests compare it to.
* :func:`validated_extract_schema` — ``staging.<source>`` holds the rows that passed the
  source contract's rules, typed: each column keeps its rules, its type is the staging table's,
  the patient id appears only as its keyed pseudonym, and the two bookkeeping columns
  (``extract_id``, ``row_number``) are added.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import dagster as dg

from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.features.columns import feature_columns
from clinical_mlops.sources import derive, tables
from clinical_mlops.sources.contract import LoadedSource

if TYPE_CHECKING:
    import pandera.pandas as pa

__all__ = ["COLUMN_SCHEMA", "feature_table_schema", "pandera_table_schema", "validated_extract_schema"]

COLUMN_SCHEMA = "dagster/column_schema"


def pandera_table_schema(schema: pa.DataFrameSchema) -> dg.TableSchema:
    """The Pandera schema as a Dagster ``TableSchema`` (dagster-pandera's own conversion)."""
    from dagster_pandera import pandera_schema_to_dagster_type

    with warnings.catch_warnings():
        # the converter is marked beta; its output is plain TableSchema, which is stable
        warnings.simplefilter("ignore", dg.BetaWarning)
        dagster_type = pandera_schema_to_dagster_type(schema)
    return dagster_type.metadata["schema"].schema


def feature_table_schema(spec: CohortSpec) -> dict[str, dg.TableSchema]:
    """Asset metadata: the cohort's feature table as its Pandera schema declares it (what
    ``pandera_table_schema(features.build.feature_schema(spec))`` gives, without importing Pandera)."""
    columns = [
        dg.TableColumn(name=c.name, type=c.dtype_name, description=None, constraints=dg.TableColumnConstraints(
            nullable=False, unique=c.unique, other=[check.error for check in c.checks]))
        for c in feature_columns(spec)
    ]
    return {COLUMN_SCHEMA: dg.TableSchema(columns=columns, constraints=dg.TableConstraints(other=[]))}


def validated_extract_schema(source: LoadedSource) -> dict[str, dg.TableSchema]:
    """Asset metadata: ``staging.<source>`` as its contract declares it, with the rules its rows passed."""
    contract = source.contract
    by_column: dict[str, list[derive.Rule]] = {}
    for rule in derive.rules(contract):
        by_column.setdefault(rule.column, []).append(rule)
    key = tuple(contract.key.columns) if contract.key is not None else ()
    patient = contract.roles.patient_id
    columns = [
        dg.TableColumn("extract_id", "VARCHAR", description="The extract (landed file) the row came from.",
                       constraints=dg.TableColumnConstraints(nullable=False)),
        dg.TableColumn("row_number", "BIGINT", description="The row's position in its extract.",
                       constraints=dg.TableColumnConstraints(nullable=False)),
    ]
    for name, sql_type in tables.staging_columns(contract).items():
        declared = patient if name == "patient_key" and patient is not None else name
        if declared != name:
            rules = by_column.get(patient, [])
            description = (f"Keyed pseudonym (HMAC) of {patient}, which passed "
                           f"{', '.join(r.check for r in rules)}; the value itself is not stored.")
        else:
            rules = by_column.get(name, [])
            spec = contract.columns[name]
            description = "; ".join([spec.description] * bool(spec.description) + [r.reason for r in rules
                                                                                   if r.kind != "not_null"])
        columns.append(dg.TableColumn(
            name=name, type=sql_type, description=description or None,
            constraints=dg.TableColumnConstraints(
                nullable=contract.columns[declared].nullable,  # patient_key: its patient id's
                unique=key == (name,) and contract.key.scope == "source",
                other=[r.name for r in rules if r.kind not in ("not_null", "unique")],
            ),
        ))
    return {COLUMN_SCHEMA: dg.TableSchema(columns=columns)}
