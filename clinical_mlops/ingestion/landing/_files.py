"""The extract file itself: its hash, its name, its header and its record count, and the header checks.

Nothing here touches the warehouse: a file that is not in the declared format is refused with
:class:`ExtractFormatError`, whose message names the problem, never a value from the file.
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

__all__ = ["EXTRACT_SUFFIXES", "ExtractFormatError", "check_header", "count_file_records", "extract_id_for",
    "file_sha256", "list_extracts", "read_header"]


EXTRACT_SUFFIXES = (".csv",)


class ExtractFormatError(ValueError):
    """The extract cannot be landed as it is; the message says why without quoting data."""


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
