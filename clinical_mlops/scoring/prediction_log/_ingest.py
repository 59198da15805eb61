"""Ingesting the log into DuckDB: incremental, verified, and what was verified recorded so later changes show.

``monitoring.prediction_log`` holds one row per verified entry; ``prediction_log_segments``
holds each segment's verified head and a sha256 of its verified prefix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from clinical_mlops.core.reporting import canonical_json
from clinical_mlops.core.warehouse import transaction
from clinical_mlops.scoring.prediction_log._entries import (
    GENESIS_HASH,
    KIND_PREDICTION,
    cohort_directory,
    list_segments,
    parse_utc,
)
from clinical_mlops.scoring.prediction_log._verify import verify_segment

__all__ = [
    "PREDICTION_LOG_DDL",
    "SEGMENTS_DDL",
    "IngestSummary",
    "SegmentIngest",
    "ensure_tables",
    "heads_digest",
    "ingest",
]

PREDICTION_LOG_DDL = """CREATE TABLE IF NOT EXISTS monitoring.prediction_log (
    cohort VARCHAR NOT NULL,
    segment VARCHAR NOT NULL,
    seq BIGINT NOT NULL,
    entry_hash VARCHAR NOT NULL,
    prev_hash VARCHAR NOT NULL,
    logged_at TIMESTAMP NOT NULL,          -- UTC, when the entry was sealed
    kind VARCHAR NOT NULL,                 -- segment_open | prediction | rejected | segment_close
    request_id VARCHAR,
    caller_key_id VARCHAR,                 -- the API key's id (never the key)
    encounter_id BIGINT,
    input_sha256 VARCHAR,
    features_json VARCHAR,                 -- the canonical model input as served
    risk DOUBLE,
    flagged BOOLEAN,
    operating_threshold DOUBLE,
    model_name VARCHAR,
    model_version VARCHAR,
    model_source VARCHAR,
    model_card_sha256 VARCHAR,
    http_status INTEGER,
    error_fields VARCHAR,                  -- for rejected requests: the fields at fault, never values
    ingested_at TIMESTAMP NOT NULL,
    PRIMARY KEY (segment, seq)
)"""

SEGMENTS_DDL = """CREATE TABLE IF NOT EXISTS monitoring.prediction_log_segments (
    segment VARCHAR PRIMARY KEY,
    cohort VARCHAR NOT NULL,
    bytes_verified BIGINT NOT NULL,
    prefix_sha256 VARCHAR NOT NULL,        -- sha256 of the verified bytes [0, bytes_verified)
    entries BIGINT NOT NULL,
    head_seq BIGINT NOT NULL,
    head_hash VARCHAR NOT NULL,
    closed BOOLEAN NOT NULL,
    torn_tail BOOLEAN NOT NULL,
    ok BOOLEAN NOT NULL,
    first_bad_seq BIGINT,
    problem VARCHAR,
    previous_segment VARCHAR,              -- the link recorded in the segment_open entry
    previous_head_seq BIGINT,
    previous_head_hash VARCHAR,
    first_checked_at TIMESTAMP NOT NULL,
    checked_at TIMESTAMP NOT NULL
)"""


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the two log tables if they do not exist."""
    con.execute(PREDICTION_LOG_DDL)
    con.execute(SEGMENTS_DDL)


def _flatten(cohort: str, segment: str, entry: dict, ingested_at: datetime) -> dict:
    record = entry["record"] if isinstance(entry["record"], dict) else {}
    response = record.get("response") or {}
    caller = record.get("caller") or {}
    features = record.get("features")
    errors = response.get("error_fields")
    return {
        "cohort": cohort,
        "segment": segment,
        "seq": int(entry["seq"]),
        "entry_hash": entry["hash"],
        "prev_hash": entry["prev_hash"],
        "logged_at": parse_utc(entry["ts"]),
        "kind": entry["kind"],
        "request_id": record.get("request_id"),
        "caller_key_id": caller.get("key_id"),
        "encounter_id": record.get("encounter_id"),
        "input_sha256": record.get("input_sha256"),
        "features_json": canonical_json(features) if features is not None else None,
        "risk": response.get("risk"),
        "flagged": response.get("flagged"),
        "operating_threshold": response.get("operating_threshold"),
        "model_name": response.get("model_name"),
        "model_version": response.get("model_version"),
        "model_source": response.get("model_source"),
        "model_card_sha256": response.get("model_card_sha256"),
        "http_status": response.get("status"),
        "error_fields": ",".join(errors) if errors else None,
        "ingested_at": ingested_at,
    }


_COLUMN_TYPES = {
    "seq": "int64", "encounter_id": "Int64", "risk": "float64", "operating_threshold": "float64",
    "flagged": "boolean", "http_status": "Int64",
}


@dataclass(frozen=True)
class SegmentIngest:
    segment: str
    new_entries: int
    new_predictions: int
    ok: bool
    torn_tail: bool
    closed: bool
    problem: str | None = None
    first_bad_seq: int | None = None


@dataclass(frozen=True)
class IngestSummary:
    cohort: str
    segments: tuple[SegmentIngest, ...]
    link_problems: tuple[str, ...]
    total_entries: int
    total_predictions: int

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.segments) and not self.link_problems

    @property
    def new_entries(self) -> int:
        return sum(s.new_entries for s in self.segments)

    @property
    def new_predictions(self) -> int:
        return sum(s.new_predictions for s in self.segments)

    @property
    def problems(self) -> list[str]:
        out = [f"{s.segment}: seq {s.first_bad_seq}: {s.problem}" for s in self.segments if not s.ok]
        return out + list(self.link_problems)


def _prefix_sha256(path: Path, length: int) -> str | None:
    """sha256 of the first ``length`` bytes, or None when the file is shorter."""
    digest = hashlib.sha256()
    remaining = length
    with open(path, "rb") as handle:
        while remaining > 0:
            chunk = handle.read(min(1 << 20, remaining))
            if not chunk:
                return None
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def ingest(con: duckdb.DuckDBPyConnection, root: Path, cohort: str, *, now: datetime | None = None) -> IngestSummary:
    """Verify and copy new log entries of one cohort into ``monitoring.prediction_log``.

    Incremental: each segment resumes from its last verified position, after checking that the
    bytes verified before are unchanged (sha256 of the prefix). Entries after a break in the
    chain are not ingested; the summary names the segment and the first bad seq.
    """
    ensure_tables(con)
    now = now or datetime.now(UTC).replace(tzinfo=None)
    directory = cohort_directory(root, cohort)
    known = {
        row[0]: row
        for row in con.execute(
            "SELECT segment, bytes_verified, prefix_sha256, entries, head_seq, head_hash, ok, problem, first_bad_seq "
            "FROM monitoring.prediction_log_segments WHERE cohort = ?",
            [cohort],
        ).fetchall()
    }
    results: list[SegmentIngest] = []
    present = set()
    for path in list_segments(directory):
        present.add(path.name)
        rows: list[dict] = []
        previous = known.get(path.name)
        offset, start_seq, prev_hash, entries_before = 0, 1, GENESIS_HASH, 0
        problem = None
        if previous is not None:
            _, bytes_verified, prefix_sha, entries_before, head_seq, head_hash, was_ok, old_problem, old_bad = previous
            if not was_ok:
                results.append(SegmentIngest(path.name, 0, 0, False, False, False, old_problem, old_bad))
                continue
            if _prefix_sha256(path, int(bytes_verified)) != prefix_sha:
                full = verify_segment(path)
                bad = full.first_bad_seq if not full.ok else int(head_seq)
                problem = full.problem if not full.ok else "verified bytes changed or truncated since ingestion"
                _store_segment(con, cohort, path.name, int(bytes_verified), prefix_sha, int(entries_before),
                               int(head_seq), head_hash, False, False, False, bad, problem, now)
                results.append(SegmentIngest(path.name, 0, 0, False, False, False, problem, bad))
                continue
            offset, start_seq, prev_hash = int(bytes_verified), int(head_seq) + 1, head_hash
        result = verify_segment(
            path, offset=offset, start_seq=start_seq, prev_hash=prev_hash,
            on_entry=lambda e, name=path.name: rows.append(_flatten(cohort, name, e, now)),
        )
        if rows:
            frame = pd.DataFrame(rows).astype(_COLUMN_TYPES)
            con.register("log_rows", frame)
            try:
                with transaction(con):
                    con.execute(
                        "INSERT INTO monitoring.prediction_log SELECT * FROM log_rows ON CONFLICT DO NOTHING"
                    )
            finally:
                con.unregister("log_rows")
        prefix = _prefix_sha256(path, result.bytes_verified) or ""
        _store_segment(con, cohort, path.name, result.bytes_verified, prefix, entries_before + result.entries,
                       result.head_seq, result.head_hash, result.closed, result.torn_tail, result.ok,
                       result.first_bad_seq, result.problem, now, opening=result.opening)
        results.append(SegmentIngest(
            path.name, len(rows), sum(1 for r in rows if r["kind"] == KIND_PREDICTION), result.ok, result.torn_tail,
            result.closed, result.problem, result.first_bad_seq,
        ))
    link_problems = [f"segment {name} was ingested but is no longer on disk" for name in known if name not in present]
    link_problems += _link_problems(con, cohort)
    totals = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE kind = 'prediction') FROM monitoring.prediction_log WHERE cohort = ?",
        [cohort],
    ).fetchall()[0]
    return IngestSummary(cohort, tuple(results), tuple(link_problems), int(totals[0]), int(totals[1]))


def _store_segment(
    con: duckdb.DuckDBPyConnection, cohort: str, segment: str, bytes_verified: int, prefix_sha256: str, entries: int,
    head_seq: int, head_hash: str, closed: bool, torn_tail: bool, ok: bool, first_bad_seq: int | None,
    problem: str | None, now: datetime, opening: dict | None = None,
) -> None:
    link = opening or {}
    with transaction(con):
        previous = con.execute(
            "SELECT previous_segment, previous_head_seq, previous_head_hash, first_checked_at "
            "FROM monitoring.prediction_log_segments WHERE segment = ?", [segment],
        ).fetchall()
        first_checked = previous[0][3] if previous else now
        if previous and not opening:
            link = dict(zip(("previous_segment", "previous_head_seq", "previous_head_hash"), previous[0][:3]))
        con.execute("DELETE FROM monitoring.prediction_log_segments WHERE segment = ?", [segment])
        con.execute(
            "INSERT INTO monitoring.prediction_log_segments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [segment, cohort, bytes_verified, prefix_sha256, entries, head_seq, head_hash, closed, torn_tail, ok,
             first_bad_seq, problem, link.get("previous_segment"), link.get("previous_head_seq"),
             link.get("previous_head_hash"), first_checked, now],
        )


def _link_problems(con: duckdb.DuckDBPyConnection, cohort: str) -> list[str]:
    """Each segment's opening link must point at an ingested entry with the hash it saw."""
    problems = []
    for segment, previous, head_seq, head_hash in con.execute(
        """SELECT segment, previous_segment, previous_head_seq, previous_head_hash
           FROM monitoring.prediction_log_segments WHERE cohort = ? AND previous_segment IS NOT NULL ORDER BY segment""",
        [cohort],
    ).fetchall():
        seen = con.execute(
            "SELECT head_seq FROM monitoring.prediction_log_segments WHERE segment = ?", [previous]
        ).fetchall()
        if not seen:
            problems.append(f"{segment}: its previous segment {previous} is missing (deleted?)")
            continue
        if head_seq is None:
            continue
        found = con.execute(
            "SELECT entry_hash FROM monitoring.prediction_log WHERE segment = ? AND seq = ?", [previous, head_seq]
        ).fetchall()
        if not found:
            problems.append(f"{segment}: {previous} no longer reaches entry {head_seq} it linked to (truncated?)")
        elif found[0][0] != head_hash:
            problems.append(f"{segment}: entry {head_seq} of {previous} differs from the one it linked to")
    return problems


def heads_digest(con: duckdb.DuckDBPyConnection, cohort: str) -> str:
    """sha256 over every segment's verified head (``segment:seq:hash`` lines, in order).

    Recorded in the ingestion asset's metadata, and so in the audit ledger: a later rewrite of
    an ingested log, even a consistently re-hashed one, no longer matches an entry there.
    """
    ensure_tables(con)
    digest = hashlib.sha256()
    for segment, seq, head in con.execute(
        "SELECT segment, head_seq, head_hash FROM monitoring.prediction_log_segments WHERE cohort = ? ORDER BY segment",
        [cohort],
    ).fetchall():
        digest.update(f"{segment}:{seq}:{head}\n".encode())
    return digest.hexdigest()
