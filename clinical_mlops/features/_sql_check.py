"""A cohort checked against its source before anything runs: the SQL reads only the source's
columns, and provides every key, feature, exclusion and target the cohort names.

The SQL runs on empty tables shaped like the source's staging table, in an in-memory DuckDB, so
a mistake is one line naming the file and the field, not a failed run.
"""

from __future__ import annotations

import re

import duckdb

from typing import Any

from clinical_mlops.sources import contract as source_contract, tables

__all__ = ["CohortProblem", "check_cohort", "known_source", "required_columns"]


class CohortProblem(ValueError):
    """A cohort that cannot run on its source; one line ``<file>: <field>: <problem>``."""


_NOT_FOUND = re.compile(r'Referenced column "?([^"\s]+)"? not found')


def known_source(name: str, file: str) -> source_contract.LoadedSource:
    """The source a cohort file names, or one line: ``<file>: source: '<name>': no source named …``."""
    try:
        return source_contract.load_source(name)
    except source_contract.ContractError as error:
        raise CohortProblem(f"{file}: source: {name!r}: {error.problem}") from None


def required_columns(spec: Any) -> tuple[str, ...]:
    """Columns the cohort's SQL must provide besides its features."""
    keys = ("encounter_id", "extract_id", "row_number")
    return keys + (("patient_key",) if spec.split_strategy == "patient_hash" else ())


def _problem(error: duckdb.Error) -> str:
    message = str(error).splitlines()[0]
    found = _NOT_FOUND.search(message)
    if found:
        return f"reads column {found.group(1)!r}, which it does not have"
    return message.split(": ", 1)[-1]


def check_cohort(spec: Any, file: str) -> source_contract.LoadedSource:
    """The cohort's source; :class:`CohortSpecError` (``<file>: <field>: <problem>``) for the first mistake."""
    source = known_source(spec.source, file)
    declared = source.contract.sensitive_attributes
    for i, attribute in enumerate(spec.sensitive_attributes):
        if attribute not in declared:
            raise CohortProblem(f"{file}: sensitive_attributes.{i}: {attribute!r} is not a sensitive attribute of "
                                  f"source {spec.source} (declared: {', '.join(declared) or 'none'})")
    if spec.split_strategy == "patient_hash" and source.contract.roles.patient_id is None:
        raise CohortProblem(f"{file}: split.strategy: source {spec.source} has no patient id role; "
                              "split by 'row' (and say so on the model card)")
    con = duckdb.connect(":memory:")
    try:
        typed = ", ".join(f'"{c}" {t}' for c, t in tables.staging_columns(source.contract).items())
        con.execute(f"CREATE TABLE source_rows (extract_id VARCHAR, row_number BIGINT, {typed})")
        for view, sql, field in (("cohort_base", spec.base_sql, f"base_sql ({spec.sql_files[0]})"),
                                 ("cohort_rows", spec.cohort_sql or "SELECT * FROM cohort_base",
                                  f"sql ({spec.sql_files[-1]})")):
            try:
                con.execute(f"CREATE VIEW {view} AS {sql}")
            except duckdb.Error as error:
                raise CohortProblem(f"{file}: {field}: {_problem(error)} (source {spec.source})") from None
        provided = {row[0] for row in con.execute("DESCRIBE cohort_rows").fetchall()}
        for column in required_columns(spec):
            if column not in provided:
                raise CohortProblem(f"{file}: base_sql: the SQL provides no column {column!r} (required)")
        if spec.split_strategy == "row" and "patient_key" in provided:
            raise CohortProblem(f"{file}: split.strategy: a 'row' split makes its own per-row patient_key; "
                                  "the SQL must not provide one")
        for i, attribute in enumerate(spec.sensitive_attributes):
            if attribute in provided:
                raise CohortProblem(f"{file}: sensitive_attributes.{i}: {attribute!r} comes from the source "
                                      "contract; the SQL must not provide a column of that name")
        for kind, names in (("numeric", spec.numeric_features), ("categorical", spec.categorical_features)):
            for i, name in enumerate(names):
                if name not in provided:
                    raise CohortProblem(f"{file}: features.{kind}.{i}: {name!r} is not a column of the cohort's SQL "
                                          f"({', '.join(spec.sql_files)})")
        checks = [("target.sql", spec.target_sql)] + [(f"exclusions.{e.name}.sql", e.sql) for e in spec.exclusions]
        for field, expression in checks:
            try:
                con.execute(f"SELECT CAST(({expression}) AS INTEGER) FROM cohort_rows LIMIT 0")
            except duckdb.Error as error:
                raise CohortProblem(f"{file}: {field}: {_problem(error)}") from None
    finally:
        con.close()
    return source
