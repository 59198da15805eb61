"""Reading an extract into a scratch table of text columns with DuckDB, or refusing it with a clear error.

DuckDB's messages quote the offending line; the errors raised here keep only the line number and
the kind of problem.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import duckdb

from clinical_mlops.ingestion.landing._files import ExtractFormatError
from clinical_mlops.sources.contract import SourceContract

__all__ = ["load_scratch_table"]


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


def load_scratch_table(con: duckdb.DuckDBPyConnection, table: str, path: Path, contract: SourceContract) -> None:
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
