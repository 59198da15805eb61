"""Verifying the log: each segment's chain, and the links between segments."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from clinical_mlops.scoring.prediction_log._entries import (
    ENTRY_FIELDS,
    GENESIS_HASH,
    KIND_CLOSE,
    KIND_OPEN,
    entry_hash,
    list_segments,
)

__all__ = ["LogVerification", "SegmentVerification", "iter_lines", "verify_log", "verify_segment"]


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
    """The outcome of checking every segment of one cohort's log."""

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
