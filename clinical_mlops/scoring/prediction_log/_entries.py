"""Log entries: their canonical form, their hash, the segment files they live in."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from clinical_mlops.core.reporting import canonical_json
from clinical_mlops.scoring.api_keys import serving_dir

__all__ = [
    "ENTRY_FIELDS",
    "GENESIS_HASH",
    "KIND_CLOSE",
    "KIND_OPEN",
    "KIND_PREDICTION",
    "KIND_REJECTED",
    "SEGMENT_SUFFIX",
    "LogEntry",
    "cohort_directory",
    "default_root",
    "entry_hash",
    "last_complete_entry",
    "list_segments",
    "parse_utc",
    "prediction_record",
    "seal",
    "utc_iso",
]

GENESIS_HASH = "0" * 64
SEGMENT_SUFFIX = ".jsonl"
ENTRY_FIELDS = frozenset({"seq", "ts", "kind", "record", "prev_hash", "hash"})
KIND_OPEN, KIND_CLOSE, KIND_PREDICTION, KIND_REJECTED = "segment_open", "segment_close", "prediction", "rejected"


def entry_hash(entry: dict) -> str:
    """sha256 of the canonical JSON of an entry without its ``hash`` field."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def utc_iso(moment: datetime | None = None) -> str:
    """The log's timestamp format: ISO 8601, UTC, microseconds, ``Z``."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(text: str) -> datetime:
    """Naive UTC datetime from the log's ISO timestamps."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LogEntry:
    """One sealed entry of the chain."""

    seq: int
    ts: str
    kind: str
    record: dict
    prev_hash: str
    hash: str
    body_json: str | None = field(default=None, compare=False, repr=False)
    """The canonical JSON of every field but ``hash`` (what the hash is over), when known."""

    def as_dict(self) -> dict:
        return {"seq": self.seq, "ts": self.ts, "kind": self.kind, "record": self.record,
                "prev_hash": self.prev_hash, "hash": self.hash}

    def line(self) -> bytes:
        """The canonical JSON of the entry and a newline.

        ``"hash"`` sorts before every other field, so the canonical text of the whole entry is the
        body's with ``"hash":"…",`` put first: one serialisation serves the hash and the line.
        """
        if self.body_json is not None and self.body_json.startswith('{"kind":'):
            return ('{"hash":"' + self.hash + '",' + self.body_json[1:] + "\n").encode()
        return (canonical_json(self.as_dict()) + "\n").encode()


def seal(seq: int, kind: str, record: dict, prev_hash: str, ts: str | None = None) -> LogEntry:
    """The entry at ``seq`` after ``prev_hash``, with its hash."""
    body = {"seq": seq, "ts": ts or utc_iso(), "kind": kind, "record": record, "prev_hash": prev_hash}
    text = canonical_json(body)
    return LogEntry(**body, hash=hashlib.sha256(text.encode()).hexdigest(), body_json=text)


def default_root() -> Path:
    """``$CLINICAL_MLOPS_PREDICTION_LOG`` or ``<serving dir>/prediction_log``."""
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
    """Where one cohort's segments live under the log root."""
    return Path(root) / cohort


def list_segments(directory: Path) -> list[Path]:
    """Segment files of one cohort's log, oldest first (names start with the UTC start time)."""
    directory = Path(directory)
    if not directory.exists():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(SEGMENT_SUFFIX))


def last_complete_entry(path: Path, max_tail: int = 1 << 20) -> dict | None:
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
