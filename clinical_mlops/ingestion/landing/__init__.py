"""The landing zone: extracts arrive as CSV files and are landed into ``raw`` as they are.

Landing is idempotent by content: the data version of an extract is the sha256 of its bytes,
and a file whose bytes were already landed is a no-op. A file that cannot be read as the
declared format is refused with an error that names the problem, never a value from it, and
nothing already in the warehouse changes.

The file and its header are checked in :mod:`._files`, read into DuckDB in :mod:`._read`, and
landed (identifier scan, ``raw.extracts`` record) in :mod:`._land`.
"""

from clinical_mlops.ingestion.landing._files import (
    EXTRACT_SUFFIXES,
    ExtractFormatError,
    check_header,
    count_file_records,
    extract_id_for,
    file_sha256,
    list_extracts,
    read_header,
)
from clinical_mlops.ingestion.landing._land import (
    ID_SHAPED_KINDS,
    LandingResult,
    describe_findings,
    extract_hashes,
    land_extract,
)

__all__ = ["EXTRACT_SUFFIXES", "ID_SHAPED_KINDS", "ExtractFormatError", "LandingResult", "check_header",
    "count_file_records", "describe_findings", "extract_hashes", "extract_id_for", "file_sha256",
    "land_extract", "list_extracts", "read_header"]
