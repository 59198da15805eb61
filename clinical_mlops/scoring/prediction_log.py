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

Durability: ``PredictionLogWriter.append`` returns only after the entry is written and
``fsync``'ed (group commit: a single writer thread seals all entries pending at that moment
into the chain, writes them in one ``write`` and one ``fsync``, then wakes their callers). The
service answers a request only after ``append`` returned, so an acknowledged prediction is on
disk even if the process is killed with ``kill -9`` a microsecond later. A crash mid-write
can leave one unterminated last line: it was never acknowledged, and the verifier reports it
as a torn tail, not as tampering.

Truncating the *end* of the newest segment cannot be detected from the file alone; ingestion
records each segment's verified head and a sha256 of the verified prefix in DuckDB
(``monitoring.prediction_log_segments``), so anything removed or changed after ingestion is
detected on the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from clinical_mlops.core.reporting import canonical_json
from clinical_mlops.core.warehouse import transaction

GENESIS_HASH = "0" * 64
SEGMENT_SUFFIX = ".jsonl"
ENTRY_FIELDS = frozenset({"seq", "ts", "kind", "record", "prev_hash", "hash"})
KIND_OPEN, KIND_CLOSE, KIND_PREDICTION, KIND_REJECTED = "segment_open", "segment_close", "prediction", "rejected"

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


# ---------------------------------------------------------------------------------------------
# entries
# ---------------------------------------------------------------------------------------------


def entry_hash(entry: dict) -> str:
    """sha256 of the canonical JSON of an entry without its ``hash`` field."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def utc_iso(moment: datetime | None = None) -> str:
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(text: str) -> datetime:
    """Naive UTC datetime from the log's ISO timestamps."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LogEntry:
    seq: int
    ts: str
    kind: str
    record: dict
    prev_hash: str
    hash: str

    def as_dict(self) -> dict:
        return {"seq": self.seq, "ts": self.ts, "kind": self.kind, "record": self.record,
                "prev_hash": self.prev_hash, "hash": self.hash}

    def line(self) -> bytes:
        return (canonical_json(self.as_dict()) + "\n").encode()


def seal(seq: int, kind: str, record: dict, prev_hash: str, ts: str | None = None) -> LogEntry:
    body = {"seq": seq, "ts": ts or utc_iso(), "kind": kind, "record": record, "prev_hash": prev_hash}
    return LogEntry(**body, hash=entry_hash(body))


def default_root() -> Path:
    """``$CLINICAL_MLOPS_PREDICTION_LOG`` or ``<serving dir>/prediction_log``."""
    from clinical_mlops.scoring.api_keys import serving_dir

    return Path(os.environ.get("CLINICAL_MLOPS_PREDICTION_LOG", serving_dir() / "prediction_log"))


def prediction_record(
    *,
    request_id: str,
    caller: dict,
    cohort: str,
    encounter_id: int | None,
    features: dict,
    input_sha256: str,
    response: dict,
    model_ms: float | None = None,
) -> dict:
    """The record of one answered request, as the service logs it (``kind = prediction``).

    ``response`` holds ``status``, ``risk``, ``flagged`` and the model reference (``model_name``,
    ``model_version``, ``model_source``, ``model_card_sha256``, ``operating_threshold``).
    """
    record = {
        "request_id": request_id,
        "caller": caller,
        "cohort": cohort,
        "encounter_id": encounter_id,
        "features": features,
        "input_sha256": input_sha256,
        "response": response,
    }
    if model_ms is not None:
        record["model_ms"] = round(model_ms, 3)
    return record


def cohort_directory(root: Path, cohort: str) -> Path:
    return Path(root) / cohort


def list_segments(directory: Path) -> list[Path]:
    """Segment files of one cohort's log, oldest first (names start with the UTC start time)."""
    directory = Path(directory)
    if not directory.exists():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(SEGMENT_SUFFIX))


def _last_complete_entry(path: Path, max_tail: int = 1 << 20) -> dict | None:
    """The last ``\\n``-terminated line of a segment, parsed (None if there is none)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        handle.seek(max(0, size - max_tail))
        tail = handle.read()
    end = tail.rfind(b"\n")
    if end < 0:
        return None
    start = tail.rfind(b"\n", 0, end) + 1
    try:
        return json.loads(tail[start:end])
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


class PredictionLogClosed(RuntimeError):
    """The writer is closed or failed: nothing more can be logged (so nothing may be served)."""


@dataclass
class _Pending:
    kind: str
    record: dict
    done: threading.Event = field(default_factory=threading.Event)
    entry: LogEntry | None = None
    error: BaseException | None = None


class PredictionLogWriter:
    """Appends entries to a new segment, durably, from any number of threads (group commit)."""

    def __init__(self, root: Path, cohort: str, *, fsync: bool = True, meta: dict | None = None) -> None:
        self.directory = cohort_directory(root, cohort)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cohort = cohort
        self.fsync = fsync
        previous = list_segments(self.directory)
        started = datetime.now(UTC)
        name = f"{started.strftime('%Y%m%dT%H%M%S_%f')}Z__{os.getpid()}__{secrets.token_hex(3)}{SEGMENT_SUFFIX}"
        self.path = self.directory / name
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
        if fsync:
            _fsync_directory(self.directory)
        self._seq = 0
        self._prev = GENESIS_HASH
        self._pending: list[_Pending] = []
        self._cv = threading.Condition()
        self._closing = False
        self._failed: BaseException | None = None
        self.entries_written = 0
        self.fsyncs = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()
        link: dict = {"previous_segment": None, "previous_head_seq": None, "previous_head_hash": None}
        if previous:
            head = _last_complete_entry(previous[-1])
            link = {
                "previous_segment": previous[-1].name,
                "previous_head_seq": head.get("seq") if head else None,
                "previous_head_hash": head.get("hash") if head else None,
            }
        self.append(KIND_OPEN, {"segment": name, "cohort": cohort, "pid": os.getpid(), **link, **(meta or {})})

    @property
    def segment(self) -> str:
        return self.path.name

    def append(self, kind: str, record: dict) -> LogEntry:
        """Seal ``record`` into the chain and return once it is on disk (fsync'ed)."""
        pending = _Pending(kind, record)
        with self._cv:
            if self._failed is not None:
                raise PredictionLogClosed(f"the prediction log failed: {self._failed}") from self._failed
            if self._closing and kind != KIND_CLOSE:
                raise PredictionLogClosed("the prediction log is closed")
            self._pending.append(pending)
            self._cv.notify_all()
        pending.done.wait()
        if pending.error is not None:
            raise PredictionLogClosed(f"the prediction log failed: {pending.error}") from pending.error
        assert pending.entry is not None
        return pending.entry

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not (self._closing and not self._pending):
                    self._cv.wait()
                if not self._pending and self._closing:
                    return
                batch, self._pending = self._pending, []
            try:
                entries = []
                seq, prev = self._seq, self._prev
                for item in batch:
                    seq += 1
                    entry = seal(seq, item.kind, item.record, prev)
                    prev = entry.hash
                    entries.append(entry)
                data = b"".join(e.line() for e in entries)
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                if self.fsync:
                    os.fsync(self._fd)
                    self.fsyncs += 1
                self._seq, self._prev = seq, prev
                self.entries_written += len(entries)
                for item, entry in zip(batch, entries):
                    item.entry = entry
                    item.done.set()
            except BaseException as exc:  # noqa: BLE001 - every waiting caller must learn of it
                with self._cv:
                    self._failed = exc
                    failed, self._pending = batch + self._pending, []
                for item in failed:
                    item.error = exc
                    item.done.set()
                return

    def close(self) -> None:
        """Append ``segment_close`` and stop; later appends raise ``PredictionLogClosed``.

        Closing and enqueuing the close entry happen under one lock, so no entry can follow it.
        """
        closing = _Pending(KIND_CLOSE, {"segment": self.segment})
        with self._cv:
            if self._closing:
                return
            self._closing = True
            if self._failed is None:
                self._pending.append(closing)
                self._cv.notify_all()
            else:
                closing.done.set()
        closing.done.wait(timeout=30)
        self._thread.join(timeout=10)
        os.close(self._fd)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentVerification:
    """The outcome of checking one segment's chain."""

    path: Path
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    bytes_verified: int
    closed: bool = False
    torn_tail: bool = False
    first_bad_seq: int | None = None
    problem: str | None = None
    opening: dict | None = None

    @property
    def segment(self) -> str:
        return self.path.name


def _check_line(raw: bytes, expected_seq: int, prev_hash: str) -> tuple[dict | None, str | None]:
    try:
        entry = json.loads(raw)
    except ValueError:
        return None, "not valid JSON"
    if not isinstance(entry, dict) or set(entry) != ENTRY_FIELDS:
        return None, "fields differ from {seq, ts, kind, record, prev_hash, hash}"
    if entry["seq"] != expected_seq:
        return None, f"seq {entry['seq']} where {expected_seq} was expected (entry deleted, inserted or reordered)"
    if entry["prev_hash"] != prev_hash:
        return None, "prev_hash does not match the previous entry (entry deleted, inserted or reordered)"
    if entry_hash(entry) != entry["hash"]:
        return None, "content does not match its hash (entry altered)"
    return entry, None


def iter_lines(path: Path, offset: int = 0) -> Iterator[tuple[int, bytes, bool]]:
    """(end offset, line without newline, terminated?) for each line from ``offset``."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        position = offset
        for raw in handle:
            position += len(raw)
            terminated = raw.endswith(b"\n")
            yield position, raw[:-1] if terminated else raw, terminated


def verify_segment(
    path: Path,
    *,
    offset: int = 0,
    start_seq: int = 1,
    prev_hash: str = GENESIS_HASH,
    on_entry=None,
) -> SegmentVerification:
    """Check the chain of one segment from ``offset`` (a verified position) to its end.

    ``on_entry(entry)`` is called for every verified entry (used by ingestion).
    """
    path = Path(path)
    expected, prev, verified_to, entries, closed, opening = start_seq, prev_hash, offset, 0, False, None
    torn = False
    for end, raw, terminated in iter_lines(path, offset):
        if not terminated:
            torn = True  # a crash mid-write: never acknowledged
            break
        entry, problem = _check_line(raw, expected, prev)
        if problem is not None:
            return SegmentVerification(path, False, entries, expected - 1, prev, verified_to, closed, False,
                                       first_bad_seq=expected, problem=problem, opening=opening)
        if closed:
            return SegmentVerification(path, False, entries, expected - 1, prev, verified_to, closed, False,
                                       first_bad_seq=expected, problem="entry after segment_close", opening=opening)
        if entry["seq"] == 1:
            if entry["kind"] != KIND_OPEN:
                return SegmentVerification(path, False, entries, 0, prev, verified_to, False, False, first_bad_seq=1,
                                           problem="the first entry is not segment_open")
            opening = entry["record"]
        closed = entry["kind"] == KIND_CLOSE
        if on_entry is not None:
            on_entry(entry)
        entries += 1
        expected += 1
        prev = entry["hash"]
        verified_to = end
    return SegmentVerification(path, True, entries, expected - 1, prev, verified_to, closed, torn, opening=opening)


@dataclass(frozen=True)
class LogVerification:
    ok: bool
    segments: tuple[SegmentVerification, ...]
    problems: tuple[str, ...]

    @property
    def entries(self) -> int:
        return sum(s.entries for s in self.segments)


def _entry_at(path: Path, seq: int) -> dict | None:
    for _, raw, terminated in iter_lines(path):
        if not terminated:
            return None
        try:
            entry = json.loads(raw)
        except ValueError:
            return None
        if entry.get("seq") == seq:
            return entry
    return None


def verify_log(directory: Path) -> LogVerification:
    """Verify every segment of one cohort's log and the links between segments."""
    segments = list_segments(directory)
    results = []
    problems = []
    names = {p.name: p for p in segments}
    for path in segments:
        result = verify_segment(path)
        results.append(result)
        if not result.ok:
            problems.append(f"{path.name}: seq {result.first_bad_seq}: {result.problem}")
        opening = result.opening or {}
        previous = opening.get("previous_segment")
        if previous:
            if previous not in names:
                problems.append(f"{path.name}: the previous segment {previous} is missing (deleted?)")
            elif opening.get("previous_head_seq") is not None:
                seen = _entry_at(names[previous], int(opening["previous_head_seq"]))
                if seen is None or seen.get("hash") != opening.get("previous_head_hash"):
                    problems.append(
                        f"{path.name}: {previous} no longer holds entry {opening['previous_head_seq']} as it was "
                        "when this segment opened (truncated or altered)"
                    )
    return LogVerification(ok=not problems, segments=tuple(results), problems=tuple(problems))


# ---------------------------------------------------------------------------------------------
# ingestion into DuckDB
# ---------------------------------------------------------------------------------------------


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
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
