"""Column schemas for the UI, built from the Pandera schemas the tables are validated against.

``dagster/column_schema`` metadata on an asset definition makes Dagster show the table's
columns (name, type, nullability, uniqueness, checks) on the asset's page. The columns and
their checks come from the Pandera schema through dagster-pandera, so the UI shows exactly what
validation enforces:

* :func:`feature_table_schema` — a cohort's ``encounter_features`` table is the Pandera feature
  schema itself (``strict=True``: no other column).
* :func:`validated_encounters_schema` — ``staging.encounters`` holds the rows that passed the
  landed-format schema, typed: each column keeps its format checks, its type is the staging
  table's, the patient number appears only as its keyed pseudonym, and the two bookkeeping
  columns (``extract_id``, ``row_number``) are added.
"""

from __future__ import annotations

import re
import warnings

import dagster as dg
import pandera.pandas as pa
from dagster_pandera import pandera_schema_to_dagster_type

from clinical_mlops.features import build as features
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.ingestion import diabetes130
from clinical_mlops.validation import rules as validation

__all__ = ["COLUMN_SCHEMA", "feature_table_schema", "pandera_table_schema", "validated_encounters_schema"]

COLUMN_SCHEMA = "dagster/column_schema"
_DDL_COLUMN = re.compile(r'^\s*(?:"(?P<quoted>[^"]+)"|(?P<name>\w+))\s+(?P<type>[A-Z]+)(?P<not_null>\s+NOT NULL)?\s*$')


def pandera_table_schema(schema: pa.DataFrameSchema) -> dg.TableSchema:
    """The Pandera schema as a Dagster ``TableSchema`` (dagster-pandera's own conversion)."""
    with warnings.catch_warnings():
        # the converter is marked beta; its output is plain TableSchema, which is stable
        warnings.simplefilter("ignore", dg.BetaWarning)
        dagster_type = pandera_schema_to_dagster_type(schema)
    return dagster_type.metadata["schema"].schema


def feature_table_schema(spec: CohortSpec) -> dict[str, dg.TableSchema]:
    """Asset metadata: the cohort's feature table as its Pandera schema declares it."""
    return {COLUMN_SCHEMA: pandera_table_schema(features.feature_schema(spec))}


def _staging_columns() -> list[tuple[str, str, bool]]:
    """(name, SQL type, NOT NULL) of ``staging.encounters``, in table order, from its DDL."""
    body = validation.STAGING_DDL[validation.STAGING_DDL.index("(") + 1:validation.STAGING_DDL.rindex(")")]
    columns = []
    for part in body.split(","):
        match = _DDL_COLUMN.match(part)
        if match is None:
            raise ValueError(f"unparsed column in STAGING_DDL: {part.strip()!r}")
        columns.append((match["quoted"] or match["name"], match["type"], bool(match["not_null"])))
    return columns


def _rule_text(rule: validation.FormatRule) -> str:
    if rule.kind == "in_vocabulary":
        shown = ", ".join(map(str, rule.arg[:8])) + (", …" if len(rule.arg) > 8 else "")
        return f"one of {len(rule.arg)} values ({shown})"
    if rule.kind == "integer_range":
        return f"an integer in [{rule.arg[0]}, {rule.arg[1]}]"
    return f"matches {rule.arg[0]}"


def validated_encounters_schema() -> dict[str, dg.TableSchema]:
    """Asset metadata: ``staging.encounters`` with the landed-format checks its rows passed."""
    checked = {c.name: c for c in pandera_table_schema(validation.raw_encounter_schema()).columns}
    pseudonym = checked.pop(diabetes130.PATIENT_ID)
    rules = {rule.column: rule for rule in validation.format_rules()}
    described = {
        "extract_id": "The extract (landed file) the row came from.",
        "row_number": "The row's position in its extract.",
        "patient_key": f"Keyed pseudonym (HMAC) of {diabetes130.PATIENT_ID}, which passed "
                       f"{', '.join(pseudonym.constraints.other)}; the number itself is not stored.",
    }
    columns = []
    for name, sql_type, not_null in _staging_columns():
        source = checked.get(name)
        columns.append(dg.TableColumn(
            name=name, type=sql_type,
            description=described.get(name) or (f"Landed as text, validated: {_rule_text(rules[name])}"
                                                 if name in rules else None),
            constraints=dg.TableColumnConstraints(
                nullable=not not_null, unique=bool(source and source.constraints.unique),
                other=list(source.constraints.other) if source is not None else [],
            ),
        ))
    return {COLUMN_SCHEMA: dg.TableSchema(columns=columns)}
