"""Landing one extract: the result, the identifier scan before landing, and the record in ``raw.extracts``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from clinical_mlops.core.evidence import FAIL, PASS, Evidence
from clinical_mlops.core.warehouse import scalar, table_exists, transaction
from clinical_mlops.ingestion import deid
from clinical_mlops.ingestion.landing._files import (
    ExtractFormatError,
    check_header,
    count_file_records,
    extract_id_for,
    file_sha256,
    read_header,
)
from clinical_mlops.ingestion.landing._read import load_scratch_table
from clinical_mlops.sources import tables
from clinical_mlops.sources.contract import LoadedSource, SourceContract

__all__ = ["ID_SHAPED_KINDS", "LandingResult", "describe_findings", "extract_hashes", "land_extract"]


@dataclass(frozen=True)
class LandingResult:
    """What landing one extract did."""

    extract_id: str
    sha256: str
    size_bytes: int
    status: str  # "landed" | "already_landed" | "rejected"
    rows_landed: int
    duplicate_of: str | None = None
    findings: tuple[deid.IdentifierFinding, ...] = field(default_factory=tuple)
    file_rows: int | None = None
    """Data records in the file, counted by :func:`count_file_records` apart from the insert path."""

    @property
    def identifier_free(self) -> bool:
        return not self.findings

    def gate_evidence(self) -> Evidence:
        """The de-identification gate's verdict: pass only when no direct identifier was found."""
        if self.identifier_free:
            return Evidence(PASS, f"extract {self.extract_id}: no direct identifiers found")
        return Evidence(FAIL, f"extract {self.extract_id}: direct identifiers found, extract not landed: "
                              f"{describe_findings(self.findings)}")

    def gate_findings(self) -> list[dict]:
        """The gate's findings as plain records: column, kind of identifier, where, rows — never a value."""
        return [{"column": f.column, "identifier": f.identifier, "location": f.location, "rows": f.matches}
                for f in self.findings]


def extract_hashes(con: duckdb.DuckDBPyConnection, source: str) -> set[str]:
    """sha256 of every extract of ``source`` in ``raw.extracts``, landed or refused (none before the table exists)."""
    if not table_exists(con, "raw.extracts"):
        return set()
    return {row[0] for row in con.execute("SELECT sha256 FROM raw.extracts WHERE source = ?", [source]).fetchall()}


_EXTRACT_COLUMNS = ("source", "extract_id", "file_name", "sha256", "size_bytes", "rows_landed", "status",
                    "rejection_reason", "landed_at", "file_rows", "contract_sha256")


def _insert_extract(con: duckdb.DuckDBPyConnection, values: tuple) -> None:
    con.execute(f"INSERT INTO raw.extracts ({', '.join(_EXTRACT_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(_EXTRACT_COLUMNS))})", list(values))


def describe_findings(findings: tuple[deid.IdentifierFinding, ...]) -> str:
    """Column and kind of each identifier found, with row counts, never the values."""
    return "; ".join(
        f"{f.column}: {f.identifier} in column name" if f.location == "column_name"
        else f"{f.column}: {f.identifier} ({f.matches} rows)"
        for f in findings
    )


def _record_rejection(
    con: duckdb.DuckDBPyConnection, source: LoadedSource, extract_id: str, path: Path, sha: str, size: int,
    findings: tuple[deid.IdentifierFinding, ...], file_rows: int | None,
) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    with transaction(con):
        con.execute("DELETE FROM raw.extracts WHERE source = ? AND extract_id = ?", [source.name, extract_id])
        _insert_extract(con, (source.name, extract_id, path.name, sha, size, 0, "rejected",
                              f"direct identifiers: {describe_findings(findings)}", now, file_rows, source.sha256))


ID_SHAPED_KINDS = frozenset({"zip5"})
"""Identifier kinds a declared numeric id matches by its shape alone (a 5-digit id reads as a ZIP)."""


def _value_findings(
    con: duckdb.DuckDBPyConnection, table: str, contract: SourceContract
) -> tuple[deid.IdentifierFinding, ...]:
    """The identifier scan of every column, less the kinds the contract exempts per column (a value of a
    column's declared vocabulary never reads as a person's name).

    An exempt column is still scanned for every other kind: an id whose codes read as ZIPs is
    exempt from ``zip5`` only, and an SSN, e-mail, phone number or date in it must not land.
    """
    exempt = {e.column: frozenset(e.kinds) for e in contract.identifier_scan_exemptions}
    columns = tuple(contract.columns)
    vocabularies = {name: spec.vocabulary() for name, spec in contract.columns.items() if spec.vocabulary()}
    findings = list(deid.scan_table_values(con, table, columns=columns, exempt_columns=tuple(exempt),
                                           vocabularies=vocabularies))
    if exempt:
        findings += [f for f in deid.scan_table_values(con, table, columns=tuple(exempt), vocabularies=vocabularies)
                     if f.identifier not in exempt[f.column]]
    return tuple(findings)


def land_extract(
    con: duckdb.DuckDBPyConnection, path: Path, source: LoadedSource, *, extract_id: str | None = None,
) -> LandingResult:
    """Land one extract file of ``source`` into ``raw.<source>`` (all values as text, as in the file).

    Refuses with :class:`ExtractFormatError` an empty or header-only file, a header that
    differs from the contract's columns, or rows that cannot be parsed. An extract whose values
    (or whose column names) suggest direct identifiers is not landed: the result carries the
    findings (column and kind of identifier, never the value) and status ``rejected``. The same
    bytes landed again in the same source are a no-op; sources never share rows or extract ids.
    """
    path, contract = Path(path), source.contract
    extract_id = extract_id or extract_id_for(path)
    if not path.exists():
        raise ExtractFormatError(f"extract {extract_id} is not in the landing zone of source {source.name}")
    size = path.stat().st_size
    if size == 0:
        raise ExtractFormatError("the file is empty: no header line")
    sha = file_sha256(path)
    tables.ensure_source_tables(con, source)

    earlier = con.execute(
        "SELECT extract_id, rows_landed FROM raw.extracts WHERE source = ? AND sha256 = ? AND status = 'landed'",
        [source.name, sha],
    ).fetchall()
    if earlier:
        return LandingResult(extract_id, sha, size, "already_landed", int(earlier[0][1]), duplicate_of=earlier[0][0])
    existing = con.execute(
        "SELECT sha256 FROM raw.extracts WHERE source = ? AND extract_id = ? AND status = 'landed'",
        [source.name, extract_id],
    ).fetchall()
    if existing:
        raise ExtractFormatError(
            f"extract {extract_id} was already landed with different content (source {source.name}, "
            f"sha256 {existing[0][0][:12]}…); land the corrected file under a new name"
        )

    header = read_header(path)
    name_findings = tuple(deid.scan_column_names(header))
    if name_findings:
        _record_rejection(con, source, extract_id, path, sha, size, name_findings, None)
        return LandingResult(extract_id, sha, size, "rejected", 0, findings=name_findings)
    check_header(header, tuple(contract.columns))

    staging_table = "landing_scratch"
    load_scratch_table(con, staging_table, path, contract)
    try:
        rows = int(scalar(con, f"SELECT count(*) FROM {staging_table}"))
        if rows == 0:
            raise ExtractFormatError("the file holds a header but no rows")
        file_rows = count_file_records(path)
        findings = _value_findings(con, staging_table, contract)
        if findings:
            _record_rejection(con, source, extract_id, path, sha, size, findings, file_rows)
            return LandingResult(extract_id, sha, size, "rejected", 0, findings=findings, file_rows=file_rows)
        now = datetime.now(UTC).replace(tzinfo=None)
        with transaction(con):
            quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in contract.columns)
            con.execute("DELETE FROM raw.extracts WHERE source = ? AND extract_id = ?", [source.name, extract_id])
            con.execute(
                f"INSERT INTO {tables.raw_table(source.name)} "
                f"SELECT ?, row_number() OVER (), {quoted} FROM {staging_table}",
                [extract_id],
            )
            _insert_extract(con, (source.name, extract_id, path.name, sha, size, rows, "landed", None, now,
                                  file_rows, source.sha256))
        return LandingResult(extract_id, sha, size, "landed", rows, file_rows=file_rows)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {staging_table}")
