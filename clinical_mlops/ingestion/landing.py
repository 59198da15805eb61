"""The landing zone: extracts arrive as CSV files and are landed into ``raw`` as they are.

Landing is idempotent by content: the data version of an extract is the sha256 of its bytes,
and a file whose bytes were already landed is a no-op. A file that cannot be read as the
declared format is refused with an error that names the problem, never a value from it, and
nothing already in the warehouse changes.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from clinical_mlops.core.evidence import FAIL, PASS, Evidence
from clinical_mlops.core.warehouse import scalar, table_exists, transaction
from clinical_mlops.ingestion import deid
from clinical_mlops.sources import tables
from clinical_mlops.sources.contract import LoadedSource, SourceContract

__all__ = ["EXTRACT_SUFFIXES", "ID_SHAPED_KINDS", "ExtractFormatError", "LandingResult", "check_header",
    "count_file_records", "describe_findings", "extract_hashes", "extract_id_for", "file_sha256",
    "land_extract", "list_extracts", "read_header"]

EXTRACT_SUFFIXES = (".csv",)


class ExtractFormatError(ValueError):
    """The extract cannot be landed as it is; the message says why without quoting data."""


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


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    """Content hash of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def extract_hashes(con: duckdb.DuckDBPyConnection, source: str) -> set[str]:
    """sha256 of every extract of ``source`` in ``raw.extracts``, landed or refused (none before the table exists)."""
    if not table_exists(con, "raw.extracts"):
        return set()
    return {row[0] for row in con.execute("SELECT sha256 FROM raw.extracts WHERE source = ?", [source]).fetchall()}


def extract_id_for(path: Path) -> str:
    """The partition key of an extract: its file name."""
    return path.name


def list_extracts(landing_dir: Path) -> list[Path]:
    """Extract files in the landing zone, in name order (names carry the arrival order)."""
    if not landing_dir.exists():
        return []
    return sorted(p for p in landing_dir.iterdir() if p.is_file() and p.suffix in EXTRACT_SUFFIXES)


_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_HEADER_READ_BYTES = 1 << 20


def read_header(path: Path) -> list[str]:
    """Column names from the first line (BOM, CRLF and CR-only line endings tolerated)."""
    with open(path, "rb") as handle:
        start = handle.read(_HEADER_READ_BYTES)
    first = _LINE_BREAK.split(start, maxsplit=1)[0]
    if first.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ExtractFormatError("the file is UTF-16 encoded; the declared format is UTF-8")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ExtractFormatError("the header line is not valid UTF-8") from None
    if not text.strip():
        raise ExtractFormatError("the file is empty: no header line")
    try:
        return next(csv.reader([text]))
    except csv.Error:
        raise ExtractFormatError("the header line could not be parsed as CSV") from None


_FIELD_SIZE_LIMIT = 1 << 30


def count_file_records(path: Path) -> int:
    """Data records in a CSV file (header excluded), counted by Python's csv module.

    Records, not physical lines: a quoted field may hold line breaks. Empty lines are not
    records. This count is independent of DuckDB's reader and of the insert into
    ``raw.encounters``, so ``landed_rows_reconcile`` can compare the two.
    """
    csv.field_size_limit(max(csv.field_size_limit(), _FIELD_SIZE_LIMIT))
    with open(path, newline="", encoding="utf-8-sig") as handle:
        records = sum(1 for row in csv.reader(handle) if row)
    return max(records - 1, 0)


_EXTRACT_COLUMNS = ("source", "extract_id", "file_name", "sha256", "size_bytes", "rows_landed", "status",
                    "rejection_reason", "landed_at", "file_rows", "contract_sha256")


def _insert_extract(con: duckdb.DuckDBPyConnection, values: tuple) -> None:
    con.execute(f"INSERT INTO raw.extracts ({', '.join(_EXTRACT_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(_EXTRACT_COLUMNS))})", list(values))


_COLUMN_NAME = re.compile(r" *[A-Za-z_][A-Za-z0-9_./-]{0,63} *")
"""What a column name looks like; anything else in a header is not echoed (it may be a value)."""


def _names(names: list[str], limit: int = 10) -> str:
    """Column names for a message: name-like ones listed, anything else only counted."""
    shown = [n if n == n.strip() else repr(n) for n in names if _COLUMN_NAME.fullmatch(n)]
    parts = shown[:limit]
    if len(shown) > limit:
        parts.append(f"and {len(shown) - limit} more")
    if hidden := len(names) - len(shown):
        parts.append(f"{hidden} not shown (not a column name; it may be a value)")
    return ", ".join(parts)


def check_header(columns: list[str], expected: tuple[str, ...]) -> None:
    """Refuse a header that differs from the declared format, naming every difference.

    Only names that look like column names are quoted: a header line that is really a data
    row (a file without its header) is described, never echoed.
    """
    if len(columns) == 1 and len(expected) > 1:
        raise ExtractFormatError("the header has a single column: is the delimiter a comma?")
    found = [c for c in expected if c in columns]
    if len(found) < len(expected) // 2:
        raise ExtractFormatError(
            f"the first line is not the declared header: only {len(found)} of {len(expected)} "
            "declared column names found (is the header row missing?)"
        )
    problems: list[str] = []
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        problems.append(f"duplicated column(s): {_names(duplicated)}")
    missing = [c for c in expected if c not in columns]
    unexpected = [c for c in columns if c not in expected]
    if missing:
        problems.append(f"missing column(s): {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected column(s): {_names(unexpected)}")
    near = [m for m in missing if any(u.strip().lower() == m.lower() for u in unexpected)]
    if near:
        problems.append(f"differing from the declared name only in case or surrounding spaces: {_names(near)}")
    if not problems and list(columns) != list(expected):
        problems.append("columns are in a different order than the declared format")
    if problems:
        raise ExtractFormatError("; ".join(problems))


def _sanitised_read_error(exc: duckdb.Error) -> str:
    """DuckDB quotes the offending line; keep only the line number and the kind of problem."""
    # Drop the options block: it names the quote character, which is not the problem.
    message = str(exc).split("\n  file = ", 1)[0]
    line = re.search(r"CSV Error on Line: (\d+)", message)
    where = f" at line {line.group(1)}" if line else ""
    found = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", message)
    if found:
        return f"malformed row{where}: expected {found.group(1)} fields, found {found.group(2)}"
    size = re.search(r"Maximum line size of (\d+) bytes exceeded", message)
    if size:
        which = f"line {line.group(1)}" if line else "a line"
        return (
            f"{which} is longer than the maximum line size of {int(size.group(1)):,} bytes: "
            "a field this long is not part of the declared format"
        )
    lowered = message.lower()
    if "unicode" in lowered or "utf-8" in lowered or "utf8" in lowered:
        return f"the file is not valid UTF-8{where}"
    if "unterminated quote" in lowered:
        return f"unterminated quote{where}"
    if "invalid state" in lowered:
        return (
            f"the rows could not be parsed as comma-separated, double-quoted CSV{where} "
            "with one kind of line ending"
        )
    return f"the file could not be parsed as CSV{where}"


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _read_csv_sql(path: Path, contract: SourceContract, *, parallel: bool = True) -> str:
    columns = ", ".join(f"{_sql_text(c)}: 'VARCHAR'" for c in contract.columns)
    fmt = contract.format
    return (
        f"read_csv({_sql_text(str(path))}, header = {str(fmt.header).lower()}, auto_detect = false, "
        f"columns = {{{columns}}}, delim = {_sql_text(fmt.delimiter)}, quote = {_sql_text(fmt.quote)}, "
        f"escape = {_sql_text(fmt.quote)}, null_padding = true, encoding = 'utf-8', "
        f"parallel = {str(parallel).lower()})"
    )


_BARE_LF = re.compile(rb"(?<!\r)\n")


def _has_mixed_line_endings(path: Path, chunk_size: int = 1 << 20) -> bool:
    """Whether the file ends some lines with CRLF and others with a bare LF."""
    crlf = bare_lf = False
    last = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            window = last + chunk  # the previous chunk's last byte, for a CRLF split across chunks
            crlf = crlf or b"\r\n" in window
            bare_lf = bare_lf or _BARE_LF.search(window, len(last)) is not None
            if crlf and bare_lf:
                return True
            last = chunk[-1:]
    return False


def _copy_with_lf_line_endings(path: Path) -> Path:
    """A temporary copy of the file with every CRLF turned into LF (outside the landing zone)."""
    handle, name = tempfile.mkstemp(suffix=".csv", prefix="clinical_mlops_landing_")
    with os.fdopen(handle, "wb") as out, open(path, "rb") as source:
        carry = b""
        while chunk := source.read(1 << 20):
            data = carry + chunk
            carry = b"\r" if data.endswith(b"\r") else b""
            out.write((data[:-1] if carry else data).replace(b"\r\n", b"\n"))
        out.write(carry)
    return Path(name)


def _load_scratch_table(con: duckdb.DuckDBPyConnection, table: str, path: Path, contract: SourceContract) -> None:
    """Read the file into a temporary table of text columns, or refuse it with a clear error.

    The fast parallel reader is tried first. DuckDB's parallel reader cannot pad short rows
    when a quoted field holds a line break, so such a file is re-read serially; a file mixing
    CRLF and LF line endings (concatenated exports) is re-read from a copy with LF only.
    """
    source, parallel, normalised = path, True, None
    try:
        while True:
            try:
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM "
                    f"{_read_csv_sql(source, contract, parallel=parallel)}"
                )
                return
            except duckdb.Error as exc:
                if parallel and "quoted new lines" in str(exc):
                    parallel = False
                elif normalised is None and _has_mixed_line_endings(path):
                    normalised = source = _copy_with_lf_line_endings(path)
                else:
                    raise ExtractFormatError(_sanitised_read_error(exc)) from None
    finally:
        if normalised is not None:
            normalised.unlink(missing_ok=True)


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
    _load_scratch_table(con, staging_table, path, contract)
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
