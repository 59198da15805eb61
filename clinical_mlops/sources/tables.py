"""A source's own warehouse tables, derived from its contract.

Each source has its raw table ``raw.<source>`` (every contract column as text, as landed, plus
``_extract_id`` and ``_row_number``), its typed staging table ``staging.<source>`` and its
quarantine ``staging.<source>__quarantine``. ``raw.extracts`` (:mod:`clinical_mlops.core.warehouse`) lists
every extract of every source, keyed by ``(source, extract_id)``: the same file name in two sources is two extracts.

Typed staging: ``integer`` → BIGINT, ``number`` → DOUBLE, ``boolean`` → BOOLEAN, others text; a
missing token becomes NULL (a column the contract does not make nullable is NOT NULL); the patient id (role ``patient_id``) is replaced by ``patient_key``,
its keyed hash, and never reaches staging in clear.
"""

from __future__ import annotations

import duckdb

from clinical_mlops.ingestion import deid
from clinical_mlops.sources.contract import LoadedSource, SourceContract

__all__ = ["ensure_source_tables", "quarantine_table", "raw_columns_ddl", "raw_table", "staging_columns",
           "staging_table", "typed_select"]

_SQL_TYPES = {"integer": "BIGINT", "number": "DOUBLE", "boolean": "BOOLEAN", "category": "VARCHAR",
              "string": "VARCHAR"}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def raw_table(source: str) -> str:
    return f"raw.{_quote(source)}"


def staging_table(source: str) -> str:
    return f"staging.{_quote(source)}"


def quarantine_table(source: str) -> str:
    return f"staging.{_quote(source + '__quarantine')}"


def raw_columns_ddl(contract: SourceContract) -> str:
    return ", ".join(f"{_quote(c)} VARCHAR" for c in contract.columns)


def staging_columns(contract: SourceContract) -> dict[str, str]:
    """Column → SQL type of ``staging.<source>`` after ``extract_id`` and ``row_number``."""
    patient = contract.roles.patient_id
    typed: dict[str, str] = {}
    if patient is not None:
        typed["patient_key"] = "VARCHAR"
    for name, spec in contract.columns.items():
        if name != patient:
            typed[name] = _SQL_TYPES[spec.type]
    return typed


def ensure_source_tables(con: duckdb.DuckDBPyConnection, source: LoadedSource) -> None:
    """Create the source's raw, staging and quarantine tables if they do not exist."""
    contract, name = source.contract, source.name
    con.execute(f"CREATE TABLE IF NOT EXISTS {raw_table(name)} (_extract_id VARCHAR NOT NULL, "
                f"_row_number BIGINT NOT NULL, {raw_columns_ddl(contract)})")
    required = {name for name, spec in contract.columns.items() if not spec.nullable}
    if contract.roles.patient_id in required:
        required.add("patient_key")
    typed = ", ".join(f"{_quote(c)} {t}{' NOT NULL' if c in required else ''}"
                      for c, t in staging_columns(contract).items())
    con.execute(f"CREATE TABLE IF NOT EXISTS {staging_table(name)} (extract_id VARCHAR NOT NULL, "
                f"row_number BIGINT NOT NULL, {typed})")
    con.execute(f"""CREATE TABLE IF NOT EXISTS {quarantine_table(name)} (
        extract_id VARCHAR NOT NULL,
        row_number BIGINT NOT NULL,
        reasons VARCHAR NOT NULL,           -- "column:check" pairs separated by "; ", never values
        quarantined_at TIMESTAMP NOT NULL
    )""")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def typed_select(contract: SourceContract, pseudonym_key: bytes, alias: str = "r") -> str:
    """SQL select list turning ``raw.<source>`` text into the typed staging columns, in order."""
    patient = contract.roles.patient_id
    parts = [f"{alias}._extract_id AS extract_id", f"{alias}._row_number AS row_number"]
    if patient is not None:
        parts.append(f"{deid.hmac_sql(f'{alias}.{_quote(patient)}', pseudonym_key)} AS patient_key")
    for name, spec in contract.columns.items():
        if name == patient:
            continue
        column = f"{alias}.{_quote(name)}"
        missing = spec.tokens(contract.missing_tokens) if spec.nullable else ()
        if missing:
            column = f"CASE WHEN {column} IN ({', '.join(_literal(t) for t in missing)}) THEN NULL ELSE {column} END"
        sql_type = _SQL_TYPES[spec.type]
        if spec.type == "boolean":
            column = f"lower({column}) = 'true'"
        elif sql_type != "VARCHAR":
            column = f"CAST({column} AS {sql_type})"
        parts.append(f"{column} AS {_quote(name)}")
    return ",\n       ".join(parts)
