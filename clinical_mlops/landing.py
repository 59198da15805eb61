"""The landing zone: extracts arrive as CSV files and are landed into ``raw`` as they are.

Landing is idempotent by content: the data version of an extract is the sha256 of its bytes,
and a file whose bytes were already landed is a no-op. A file that cannot be read as the
declared format is refused with an error that names the problem, never a value from it, and
nothing already in the warehouse changes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from clinical_mlops import deid, diabetes130
from clinical_mlops.warehouse import scalar, transaction

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

    @property
    def identifier_free(self) -> bool:
        return not self.findings


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    """Content hash of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def extract_id_for(path: Path) -> str:
    """The partition key of an extract: its file name."""
    return path.name


def list_extracts(landing_dir: Path) -> list[Path]:
    """Extract files in the landing zone, in name order (names carry the arrival order)."""
    if not landing_dir.exists():
        return []
    return sorted(p for p in landing_dir.iterdir() if p.is_file() and p.suffix in EXTRACT_SUFFIXES)


def read_header(path: Path) -> list[str]:
    """Column names from the first line (BOM and CRLF tolerated)."""
    with open(path, "rb") as handle:
        first = handle.readline(1 << 20)
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractFormatError("the header line is not valid UTF-8") from exc
    if not text.strip():
        raise ExtractFormatError("the file is empty: no header line")
    return next(csv.reader(io.StringIO(text.rstrip("\r\n"))))


def check_header(columns: list[str], expected: tuple[str, ...] = diabetes130.COLUMNS) -> None:
    """Refuse a header that differs from the declared format, naming every difference."""
    problems: list[str] = []
    if len(columns) == 1 and len(expected) > 1:
        problems.append("the header has a single column: is the delimiter a comma?")
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        problems.append(f"duplicated column(s): {', '.join(duplicated)}")
    missing = [c for c in expected if c not in columns]
    unexpected = [c for c in columns if c not in expected]
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected column(s): {', '.join(unexpected[:10])}")
    if not problems and list(columns) != list(expected):
        problems.append("columns are in a different order than the declared format")
    if problems:
        raise ExtractFormatError("; ".join(problems))


def _sanitised_read_error(exc: duckdb.Error) -> str:
    """DuckDB quotes the offending line; keep only the line number and the kind of problem."""
    message = str(exc)
    line = re.search(r"CSV Error on Line: (\d+)", message)
    where = f" at line {line.group(1)}" if line else ""
    found = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", message)
    if found:
        return f"malformed row{where}: expected {found.group(1)} fields, found {found.group(2)}"
    if "unicode" in message.lower() or "utf-8" in message.lower():
        return f"the file is not valid UTF-8{where}"
    if "quote" in message.lower():
        return f"unterminated or misplaced quote{where}"
    return f"the file could not be parsed as CSV{where}"


def _read_csv_sql(path: Path) -> str:
    columns = ", ".join(f"'{c}': 'VARCHAR'" for c in diabetes130.COLUMNS)
    escaped = str(path).replace("'", "''")
    return (
        f"read_csv('{escaped}', header = true, auto_detect = false, columns = {{{columns}}}, "
        "delim = ',', quote = '\"', escape = '\"', null_padding = true, encoding = 'utf-8')"
    )


def describe_findings(findings: tuple[deid.IdentifierFinding, ...]) -> str:
    """Column and kind of each identifier found, with row counts, never the values."""
    return "; ".join(
        f"{f.column}: {f.identifier} in column name" if f.location == "column_name"
        else f"{f.column}: {f.identifier} ({f.matches} rows)"
        for f in findings
    )


def _record_rejection(
    con: duckdb.DuckDBPyConnection, extract_id: str, path: Path, sha: str, size: int,
    findings: tuple[deid.IdentifierFinding, ...],
) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    with transaction(con):
        con.execute("DELETE FROM raw.extracts WHERE extract_id = ?", [extract_id])
        con.execute(
            "INSERT INTO raw.extracts VALUES (?, ?, ?, ?, 0, 'rejected', ?, ?)",
            [extract_id, path.name, sha, size, f"direct identifiers: {describe_findings(findings)}", now],
        )


def land_extract(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    *,
    extract_id: str | None = None,
    exempt_identifier_columns: tuple[str, ...] = (diabetes130.ENCOUNTER_ID, diabetes130.PATIENT_ID),
) -> LandingResult:
    """Land one extract file into ``raw.encounters`` (all values as text, as in the file).

    Refuses with :class:`ExtractFormatError` an empty or header-only file, a header that
    differs from the declared format, or rows that cannot be parsed. An extract whose values
    (or whose column names suggest them) is not landed: the result carries the findings (column and kind
    of identifier, never the value) and status ``rejected``.
    """
    path = Path(path)
    extract_id = extract_id or extract_id_for(path)
    if not path.exists():
        raise ExtractFormatError(f"extract {extract_id} is not in the landing zone")
    size = path.stat().st_size
    if size == 0:
        raise ExtractFormatError("the file is empty: no header line")
    sha = file_sha256(path)

    earlier = con.execute(
        "SELECT extract_id FROM raw.extracts WHERE sha256 = ? AND status = 'landed'", [sha]
    ).fetchall()
    if earlier:
        rows = scalar(con, "SELECT rows_landed FROM raw.extracts WHERE extract_id = ?", [earlier[0][0]])
        return LandingResult(extract_id, sha, size, "already_landed", int(rows), duplicate_of=earlier[0][0])
    existing = con.execute(
        "SELECT sha256 FROM raw.extracts WHERE extract_id = ? AND status = 'landed'", [extract_id]
    ).fetchall()
    if existing:
        raise ExtractFormatError(
            f"extract {extract_id} was already landed with different content "
            f"(sha256 {existing[0][0][:12]}…); land the corrected file under a new name"
        )

    header = read_header(path)
    name_findings = tuple(deid.scan_column_names(header))
    if name_findings:
        _record_rejection(con, extract_id, path, sha, size, name_findings)
        return LandingResult(extract_id, sha, size, "rejected", 0, findings=name_findings)
    check_header(header)

    staging_table = "landing_scratch"
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {staging_table} AS SELECT * FROM {_read_csv_sql(path)}")
    except duckdb.Error as exc:
        raise ExtractFormatError(_sanitised_read_error(exc)) from None
    try:
        rows = int(scalar(con, f"SELECT count(*) FROM {staging_table}"))
        if rows == 0:
            raise ExtractFormatError("the file holds a header but no rows")
        findings = tuple(
            deid.scan_table_values(
                con, staging_table, columns=diabetes130.COLUMNS, exempt_columns=exempt_identifier_columns
            )
        )
        if findings:
            _record_rejection(con, extract_id, path, sha, size, findings)
            return LandingResult(extract_id, sha, size, "rejected", 0, findings=findings)
        now = datetime.now(UTC).replace(tzinfo=None)
        with transaction(con):
            quoted = ", ".join(f'"{c}"' for c in diabetes130.COLUMNS)
            con.execute("DELETE FROM raw.extracts WHERE extract_id = ?", [extract_id])
            con.execute(
                f"INSERT INTO raw.encounters SELECT ?, row_number() OVER (), {quoted} FROM {staging_table}",
                [extract_id],
            )
            con.execute(
                "INSERT INTO raw.extracts VALUES (?, ?, ?, ?, ?, 'landed', NULL, ?)",
                [extract_id, path.name, sha, size, rows, now],
            )
        return LandingResult(extract_id, sha, size, "landed", rows)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {staging_table}")
