"""The hash chain: entries, their canonical line, the hash over it, and the check of one line.

An entry's line is its canonical JSON (:func:`clinical_mlops.core.reporting.canonical_json`,
UTF-8); ``hash`` is the sha256 of that line without the ``hash`` field, and ``prev_hash`` links
it to the entry before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clinical_mlops.core.reporting import canonical_json

__all__ = [
    "FIELDS",
    "GENESIS_HASH",
    "Event",
    "LedgerEntry",
    "LedgerError",
    "LedgerIntegrityError",
    "PayloadError",
    "check_line",
    "make_entry",
    "now",
    "payload_bytes_of",
    "sha256",
]

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first entry."""

FIELDS: tuple[str, ...] = (
    "seq", "ts", "actor", "event_type", "subject", "payload", "payload_sha256", "prev_hash", "hash",
)
FIELD_SET = frozenset(FIELDS)
HASH_FRAGMENT = b',"hash":"'
PAYLOAD_START = b'","payload":'
PAYLOAD_END = b',"payload_sha256":"'


class LedgerError(RuntimeError):
    """The ledger cannot be used as asked (bad arguments, unknown entry)."""


class LedgerIntegrityError(LedgerError):
    """The ledger on disk does not verify; nothing is appended to a broken chain."""


class PayloadError(ValueError):
    """A payload would put patient-level data (or something that is not JSON) in the ledger."""


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def now() -> str:
    """The current UTC time as the ledger writes it (microseconds, ``Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Event:
    """Something to record. ``natural_key`` makes recording idempotent (stored in the payload)."""

    event_type: str
    subject: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    actor: str | None = None
    natural_key: str | None = None
    ts: str | None = None


@dataclass(frozen=True)
class LedgerEntry:
    """One line of the ledger, parsed."""

    seq: int
    ts: str
    actor: str
    event_type: str
    subject: str
    payload: dict[str, Any]
    payload_sha256: str
    prev_hash: str
    hash: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LedgerEntry:
        return cls(**{name: data[name] for name in FIELDS})

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}

    @property
    def natural_key(self) -> str | None:
        key = self.payload.get("natural_key")
        return str(key) if key is not None else None


def _json_str(value: str) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def make_entry(
    seq: int, prev_hash: str, event: Event, payload: dict[str, Any], payload_bytes: bytes, actor: str
) -> tuple[dict[str, Any], bytes]:
    """The entry for ``event`` and its canonical line, assembled around the payload's canonical bytes.

    Keys in sorted order (actor, event_type, hash, payload, payload_sha256, prev_hash, seq,
    subject, ts), so the line equals ``canonical_json(entry)``; the hash is computed over the
    same bytes without the ``hash`` field.
    """
    for name, value in (("event_type", event.event_type), ("subject", event.subject)):
        if not isinstance(value, str) or not value:
            raise LedgerError(f"{name} must be a non-empty string")
    ts = event.ts or now()
    who = event.actor or actor
    payload_sha = sha256(payload_bytes)
    head = b'{"actor":' + _json_str(who) + b',"event_type":' + _json_str(event.event_type)
    tail = (b',"payload":' + payload_bytes + b',"payload_sha256":"' + payload_sha.encode()
            + b'","prev_hash":"' + prev_hash.encode() + b'","seq":' + str(int(seq)).encode()
            + b',"subject":' + _json_str(event.subject) + b',"ts":' + _json_str(ts) + b"}")
    digest = sha256(head + tail)
    body = {"seq": seq, "ts": ts, "actor": who, "event_type": event.event_type, "subject": event.subject,
            "payload": payload, "payload_sha256": payload_sha, "prev_hash": prev_hash, "hash": digest}
    return body, head + HASH_FRAGMENT + digest.encode() + b'"' + tail + b"\n"


def _line_hash(line: bytes, claimed: str) -> str | None:
    """sha256 of the entry without its hash, computed on the line's own bytes.

    The canonical line is the canonical body with ``,"hash":"<hex>"`` spliced in after
    ``event_type`` (keys are sorted), so removing that fragment gives the exact bytes the hash
    was computed over. Any other byte change changes the digest.
    """
    fragment = HASH_FRAGMENT + claimed.encode() + b'"'
    at = line.find(fragment)
    if at < 0:
        return None
    return sha256(line[:at] + line[at + len(fragment):])


def payload_bytes_of(line: bytes, entry: Mapping[str, Any]) -> bytes:
    """The canonical bytes of a parsed line's payload.

    They sit between the hash and payload_sha256 fields of a canonical line; a line that hashes
    but is not canonical falls back to re-serialising the payload.
    """
    start = line.find(PAYLOAD_START) + len(PAYLOAD_START)
    payload = line[start:line.rfind(PAYLOAD_END)]
    if sha256(payload) != entry["payload_sha256"]:
        return canonical_json(entry["payload"]).encode()
    return payload


def check_line(line: bytes, position: int, prev_hash: str, prev_prev_hash: str | None) -> tuple[str | None, int, str]:
    """(problem or None, bad position, this entry's hash) for the line at ``position`` (1-based)."""
    if not line.endswith(b"\n"):
        return "incomplete final entry (file truncated or write interrupted)", position, ""
    try:
        entry = json.loads(line.decode())
    except ValueError:
        return "not valid JSON (bytes altered)", position, ""
    if not isinstance(entry, dict) or entry.keys() != FIELD_SET:
        return "fields missing, added or renamed (entry altered)", position, ""
    claimed = entry["hash"]
    if not isinstance(claimed, str) or _line_hash(line[:-1], claimed) != claimed:
        return "hash does not match the entry's content (entry altered)", position, ""
    start = line.find(PAYLOAD_START, 0) + len(PAYLOAD_START)
    end = line.rfind(PAYLOAD_END)
    if sha256(line[start:end]) != entry["payload_sha256"]:
        try:
            payload_ok = sha256(canonical_json(entry["payload"]).encode()) == entry["payload_sha256"]
        except (TypeError, ValueError):
            payload_ok = False
        if not payload_ok:
            return "payload_sha256 does not match the payload", position, claimed
    seq = entry["seq"]
    if entry["prev_hash"] != prev_hash or seq != position:
        if prev_prev_hash is not None and entry["prev_hash"] == prev_prev_hash:
            return f"entry {position - 1} was inserted: entry {seq} links past it", position - 1, claimed
        if seq != position:
            kind = "missing or reordered" if isinstance(seq, int) and seq > position else "duplicated or reordered"
            return f"position {position} holds entry seq {seq}: entries {kind}", position, claimed
        return "prev_hash does not match the previous entry (entries deleted, inserted or reordered)", position, claimed
    return None, position, claimed
