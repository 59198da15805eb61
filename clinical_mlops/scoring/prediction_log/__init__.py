"""The append-only, hash-chained prediction log of the scoring service, and its ingestion.

Why files and not DuckDB: DuckDB admits one writing process, and the warehouse's writer is
whichever Dagster run holds the pool. The service must never wait for (or break) a training
run, so it appends to its own files and an asset ingests them later.

Format: one JSON object per line (UTF-8, ``\\n``-terminated)::

    {"seq": 7, "ts": "2026-11-28T10:15:02.123456Z", "kind": "prediction",
     "record": {...}, "prev_hash": "<hash of entry 6>", "hash": "<sha256>"}

``hash`` is the sha256 of the canonical JSON (sorted keys, no whitespace) of every other field,
and ``prev_hash`` is the previous entry's hash (64 zeros for the first), so changing, deleting,
inserting or reordering any byte breaks the chain at a precise ``seq``.

Segments: every writer process opens a new segment file (``<cohort>/<UTC start>__<pid>__<nonce>.jsonl``,
created with ``O_EXCL`` and never reopened), so concurrent service processes never interleave
a chain. The first entry (``segment_open``) names the previous segment and the head (seq, hash)
it saw there, which links segments into one history: deleting a segment, or truncating one
below a head a later segment saw, is detected. A clean shutdown appends ``segment_close``.

Durability: ``PredictionLogWriter.append`` returns (and the future of ``submit``, its
non-blocking form, resolves) only after the entry is written and ``fsync``'ed (group commit: a
single writer thread seals all entries pending at that moment into the chain, writes them in one
``write`` and one ``fsync``, then resolves their futures). The service answers a request only
after that, so an acknowledged prediction is on
disk even if the process is killed with ``kill -9`` a microsecond later. A crash mid-write
can leave one unterminated last line: it was never acknowledged, and the verifier reports it
as a torn tail, not as tampering.

Truncating the *end* of the newest segment cannot be detected from the file alone; ingestion
records each segment's verified head and a sha256 of the verified prefix in DuckDB
(``monitoring.prediction_log_segments``), so anything removed or changed after ingestion is
detected on the next run.
"""

from clinical_mlops.scoring.prediction_log._entries import (
    ENTRY_FIELDS,
    GENESIS_HASH,
    KIND_CLOSE,
    KIND_OPEN,
    KIND_PREDICTION,
    KIND_REJECTED,
    SEGMENT_SUFFIX,
    LogEntry,
    cohort_directory,
    default_root,
    entry_hash,
    list_segments,
    parse_utc,
    prediction_record,
    seal,
    utc_iso,
)
from clinical_mlops.scoring.prediction_log._ingest import (
    PREDICTION_LOG_DDL,
    SEGMENTS_DDL,
    IngestSummary,
    SegmentIngest,
    ensure_tables,
    heads_digest,
    ingest,
)
from clinical_mlops.scoring.prediction_log._verify import (
    LogVerification,
    SegmentVerification,
    iter_lines,
    verify_log,
    verify_segment,
)
from clinical_mlops.scoring.prediction_log._writer import PredictionLogClosed, PredictionLogWriter

__all__ = [
    "ENTRY_FIELDS",
    "GENESIS_HASH",
    "KIND_CLOSE",
    "KIND_OPEN",
    "KIND_PREDICTION",
    "KIND_REJECTED",
    "PREDICTION_LOG_DDL",
    "SEGMENTS_DDL",
    "SEGMENT_SUFFIX",
    "IngestSummary",
    "LogEntry",
    "LogVerification",
    "PredictionLogClosed",
    "PredictionLogWriter",
    "SegmentIngest",
    "SegmentVerification",
    "cohort_directory",
    "default_root",
    "ensure_tables",
    "entry_hash",
    "heads_digest",
    "ingest",
    "iter_lines",
    "list_segments",
    "parse_utc",
    "prediction_record",
    "seal",
    "utc_iso",
    "verify_log",
    "verify_segment",
]
