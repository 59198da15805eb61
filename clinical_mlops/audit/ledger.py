"""The audit ledger: an append-only, hash-chained JSON-lines file with a signed head.

Every entry is one line of canonical JSON (sorted keys, no whitespace, UTF-8)::

    {"actor": ..., "event_type": ..., "hash": ..., "payload": {...}, "payload_sha256": ...,
     "prev_hash": ..., "seq": 1, "subject": ..., "ts": "2026-11-28T10:29:00.123456Z"}

* ``payload_sha256`` = sha256 of the canonical payload;
* ``hash`` = sha256 of the canonical serialization of every field except ``hash``;
* ``prev_hash`` = the previous entry's ``hash`` (:data:`GENESIS_HASH` for ``seq`` 1), and
  ``seq`` counts from 1 without gaps, so ``seq`` is also the line number.

Why a chain *and* a head *and* a mirror
---------------------------------------
A hash chain alone detects a changed byte, a deleted, inserted or reordered entry — but not a
truncated tail (the shorter file is still a valid chain) nor an entry appended by someone who
recomputed the hashes (sha256 needs no secret). So every append also rewrites a separate
**head checkpoint** (``ledger.head`` beside the file, or ``$CLINICAL_MLOPS_LEDGER_HEAD``):
the last ``seq`` and ``hash``, authenticated with HMAC-SHA256 under
``$CLINICAL_MLOPS_LEDGER_KEY``. Because each hash covers all earlier entries, signing the
head signs the whole chain: a truncated file falls short of the head, a forged append runs
past it, and a rewritten chain ends on a hash the head does not carry — and forging the head
needs the key. What one file store cannot show is a rollback of *both* files to an older
signed state; the DuckDB mirror (``audit.ledger``, written by :func:`mirror_to_duckdb`) is a
third, independent copy, and :func:`verify` with a connection compares the file with it
entry by entry, which also names the first altered position when a whole chain was rewritten.
Without a configured key the head is signed with a documented development key (a warning is
logged), which still detects truncation and naive appends but not a deliberate forger.

Concurrency: appends hold an exclusive ``fcntl.flock`` on the ledger file while they read the
tail, check it against the head, write and ``fsync`` the new lines and replace the head, so
concurrent writers — threads or processes — queue and never fork the chain. Readers
(:func:`verify`, :func:`mirror_to_duckdb`) take a shared lock.

Edits never rewrite a line: :func:`amend` appends an ``amendment`` entry that names the
amended entry and carries its prior value (21 CFR Part 11 §11.10(e)).

Payloads carry hashes, counts, metrics and ids of runs, models and extracts — never patient
rows: :func:`check_payload` refuses identifier keys (``patient_key``, ``encounter_id`` …),
long lists, oversized payloads and values that look like SSNs or MRNs.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import hmac
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

__all__ = [
    "GENESIS_HASH",
    "Event",
    "LedgerEntry",
    "LedgerError",
    "LedgerIntegrityError",
    "MirrorResult",
    "PayloadError",
    "VerificationResult",
    "amend",
    "append",
    "append_many",
    "canonical_json",
    "check_payload",
    "default_actor",
    "default_ledger_path",
    "effective_payload",
    "head_path",
    "mirror_to_duckdb",
    "read_entries",
    "read_head",
    "reseal",
    "verify",
]

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first entry."""

LEDGER_ENV = "CLINICAL_MLOPS_LEDGER"
HEAD_ENV = "CLINICAL_MLOPS_LEDGER_HEAD"
KEY_ENV = "CLINICAL_MLOPS_LEDGER_KEY"
ACTOR_ENV = "CLINICAL_MLOPS_ACTOR"
DEVELOPMENT_KEY = b"clinical-mlops-development-ledger-key (not secret)"

FIELDS: tuple[str, ...] = (
    "seq", "ts", "actor", "event_type", "subject", "payload", "payload_sha256", "prev_hash", "hash",
)
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_LIST_LENGTH = 500
FORBIDDEN_KEYS = frozenset(
    {
        "patient_key", "patient_keys", "patient_nbr", "patient_id", "patient_ids", "encounter_id",
        "encounter_ids", "mrn", "ssn", "row_number", "row_numbers",
    }
)
"""Payload keys (at any depth, case-insensitive) that would carry patient-level data."""

_FORBIDDEN_VALUES = {
    "ssn": re.compile(r"(^|[^0-9-])[0-9]{3}-[0-9]{2}-[0-9]{4}($|[^0-9-])"),
    "mrn": re.compile(r"(?i)\b(mrn|medical\s+record(\s+(number|no))?)\s*[:#]?\s*[A-Z0-9-]*[0-9]{3,}"),
}

_HASH_FRAGMENT = b',"hash":"'
_FIELD_SET = frozenset(FIELDS)


class LedgerError(RuntimeError):
    """The ledger cannot be used as asked (bad arguments, unknown entry)."""


class LedgerIntegrityError(LedgerError):
    """The ledger on disk does not verify; nothing is appended to a broken chain."""


class PayloadError(ValueError):
    """A payload would put patient-level data (or something that is not JSON) in the ledger."""


# ---------------------------------------------------------------------------------------------
# canonical form, paths, keys
# ---------------------------------------------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN: the bytes every hash is computed over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_ledger_path(warehouse_path: Path | str | None = None) -> Path:
    """``$CLINICAL_MLOPS_LEDGER``, else ``audit/ledger.jsonl`` beside the warehouse it audits.

    With no warehouse given, the project's data folder (``data/audit/ledger.jsonl``).
    """
    if os.environ.get(LEDGER_ENV):
        return Path(os.environ[LEDGER_ENV])
    if warehouse_path is not None:
        return Path(warehouse_path).resolve().parent / "audit" / "ledger.jsonl"
    from clinical_mlops.core.settings import default_paths

    return default_paths().data_dir / "audit" / "ledger.jsonl"


def head_path(path: Path | str) -> Path:
    """Where the signed head checkpoint of ``path`` lives."""
    if os.environ.get(HEAD_ENV):
        return Path(os.environ[HEAD_ENV])
    return Path(path).with_suffix(".head")


_warned_development_key = False


def _key(key: bytes | str | None = None) -> bytes:
    global _warned_development_key
    if key is not None:
        return key.encode() if isinstance(key, str) else key
    value = os.environ.get(KEY_ENV)
    if value:
        return value.encode()
    if not _warned_development_key:
        log.warning("%s is not set: the ledger head is signed with the documented development key", KEY_ENV)
        _warned_development_key = True
    return DEVELOPMENT_KEY


def _key_fingerprint(key: bytes) -> str:
    return _sha256(b"clinical-mlops-ledger-key:" + key)[:16]


def default_actor() -> str:
    """Who is acting: ``$CLINICAL_MLOPS_ACTOR`` or the operating-system user."""
    if os.environ.get(ACTOR_ENV):
        return os.environ[ACTOR_ENV]
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        return f"uid:{os.getuid()}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------------------------------------
# payload guard
# ---------------------------------------------------------------------------------------------


def _plain(value: Any, where: str) -> Any:
    """JSON-safe copy: tuples to lists, NaN/inf to None, datetimes to ISO strings."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _plain(value.item(), where)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_LIST_LENGTH:
            raise PayloadError(
                f"{where}: a list of {len(value)} items looks like rows; record a count or a hash instead"
            )
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise PayloadError(f"{where}: {type(value).__name__} is not JSON; pass counts, hashes, ids or metrics")


_SSN_TAIL = re.compile(r"-[0-9]{2}-[0-9]{4}")


def _looks_like_ssn(text: str) -> bool:
    """``ddd-dd-dddd`` not inside a longer run of digits and dashes (what ``_FORBIDDEN_VALUES['ssn']`` matches)."""
    for match in _SSN_TAIL.finditer(text):
        start, end = match.start(), match.end()
        if start < 3 or not text[start - 3:start].isdigit():
            continue
        before = text[start - 4] if start >= 4 else ""
        after = text[end] if end < len(text) else ""
        if not (before.isdigit() or before == "-") and not (after.isdigit() or after == "-"):
            return True
    return False


_FORBIDDEN_KEY_PATTERN = re.compile('"(' + "|".join(sorted(FORBIDDEN_KEYS)) + ')":', re.IGNORECASE)


def _checked(payload: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The payload as plain JSON and its canonical bytes, or :class:`PayloadError`.

    Keys and values are checked on the canonical text: a quote inside a JSON string is always
    escaped, so ``"patient_key":`` there can only be a key.
    """
    if not isinstance(payload, Mapping):
        raise PayloadError(f"payload must be a mapping, got {type(payload).__name__}")
    plain = _plain(payload, "payload")
    data = canonical_json(plain)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload is {len(data):,} bytes (limit {MAX_PAYLOAD_BYTES:,}); record a hash of large content")
    text = data.decode()
    lowered = text.lower()
    if any(f'"{key}":' in lowered for key in FORBIDDEN_KEYS):  # cheap test first; the regex names the key
        found = _FORBIDDEN_KEY_PATTERN.search(text)
        raise PayloadError(f"payload key '{found.group(1) if found else '?'}' would carry patient-level data; "
                           "record a count or a hash")
    if _looks_like_ssn(text):
        raise PayloadError("a payload value looks like a ssn; identifiers never enter the ledger")
    if ("mrn" in lowered or "medical" in lowered) and _FORBIDDEN_VALUES["mrn"].search(text):
        raise PayloadError("a payload value looks like a mrn; identifiers never enter the ledger")
    return plain, data


def check_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload as plain JSON, or :class:`PayloadError` if it could carry patient rows."""
    return _checked(payload)[0]


# ---------------------------------------------------------------------------------------------
# entries
# ---------------------------------------------------------------------------------------------


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


def _make_entry(
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
    ts = event.ts or _now()
    who = event.actor or actor
    payload_sha = _sha256(payload_bytes)
    head = b'{"actor":' + _json_str(who) + b',"event_type":' + _json_str(event.event_type)
    tail = (b',"payload":' + payload_bytes + b',"payload_sha256":"' + payload_sha.encode()
            + b'","prev_hash":"' + prev_hash.encode() + b'","seq":' + str(int(seq)).encode()
            + b',"subject":' + _json_str(event.subject) + b',"ts":' + _json_str(ts) + b"}")
    digest = _sha256(head + tail)
    body = {"seq": seq, "ts": ts, "actor": who, "event_type": event.event_type, "subject": event.subject,
            "payload": payload, "payload_sha256": payload_sha, "prev_hash": prev_hash, "hash": digest}
    return body, head + _HASH_FRAGMENT + digest.encode() + b'"' + tail + b"\n"


def _line_hash(line: bytes, claimed: str) -> str | None:
    """sha256 of the entry without its hash, computed on the line's own bytes.

    The canonical line is the canonical body with ``,"hash":"<hex>"`` spliced in after
    ``event_type`` (keys are sorted), so removing that fragment gives the exact bytes the hash
    was computed over. Any other byte change changes the digest.
    """
    fragment = _HASH_FRAGMENT + claimed.encode() + b'"'
    at = line.find(fragment)
    if at < 0:
        return None
    return _sha256(line[:at] + line[at + len(fragment):])


# ---------------------------------------------------------------------------------------------
# locking, tail, head
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path, *, exclusive: bool) -> Iterator[Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield fh
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_tail(fh: Any) -> tuple[int, str, int]:
    """(seq, hash, size) of the last complete entry; refuses a file ending mid-entry."""
    size = fh.seek(0, os.SEEK_END)
    if size == 0:
        return 0, GENESIS_HASH, 0
    fh.seek(size - 1)
    if fh.read(1) != b"\n":
        raise LedgerIntegrityError(
            "the ledger ends with an incomplete entry (interrupted write or truncation); "
            "run `clinical-mlops audit verify`, then `audit reseal` if the chain is otherwise intact"
        )
    end, block = size - 1, 8192
    while True:
        start = max(0, end - block)
        fh.seek(start)
        data = fh.read(end - start)
        newline = data.rfind(b"\n")
        if newline >= 0 or start == 0:
            last = data[newline + 1:]
            break
        block *= 2
    try:
        entry = json.loads(last)
        return int(entry["seq"]), str(entry["hash"]), size
    except (ValueError, KeyError, TypeError) as exc:
        raise LedgerIntegrityError("the last ledger entry is not a valid entry; run `clinical-mlops audit verify`") from exc


def _head_mac(key: bytes, seq: int, hash_: str, fingerprint: str) -> str:
    return hmac.new(key, canonical_json({"seq": seq, "hash": hash_, "key_fingerprint": fingerprint}), "sha256").hexdigest()


def read_head(path: Path | str) -> dict[str, Any] | None:
    """The head checkpoint (``seq``, ``hash``, ``updated_at``, ``key_fingerprint``, ``mac``), or None."""
    target = head_path(path)
    if not target.exists():
        return None
    try:
        head = json.loads(target.read_bytes())
        return {"seq": int(head["seq"]), "hash": str(head["hash"]), "updated_at": head.get("updated_at"),
                "key_fingerprint": str(head.get("key_fingerprint", "")), "mac": str(head.get("mac", ""))}
    except (ValueError, KeyError, TypeError):
        return {"seq": -1, "hash": "", "updated_at": None, "key_fingerprint": "", "mac": "", "corrupt": True}


def _head_problem(head: dict[str, Any], key: bytes) -> str | None:
    if head.get("corrupt"):
        return "the head checkpoint is not readable"
    fingerprint = _key_fingerprint(key)
    if head["key_fingerprint"] != fingerprint:
        return (f"the head was signed with another key (fingerprint {head['key_fingerprint'] or 'none'}, "
                f"this key {fingerprint})")
    if not hmac.compare_digest(head["mac"], _head_mac(key, head["seq"], head["hash"], fingerprint)):
        return "the head checkpoint's signature does not verify (head altered or forged)"
    return None


def _write_head(path: Path, seq: int, hash_: str, key: bytes, *, durable: bool = True) -> None:
    """Overwrite the head in place (one small write, then fsync; the caller holds the ledger lock).

    The record is far smaller than a disk sector, so the write lands whole; a head that is
    nonetheless unreadable after a crash is reported by ``verify`` and repaired by ``reseal``.
    """
    target = head_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = _key_fingerprint(key)
    head = {"seq": seq, "hash": hash_, "updated_at": _now(), "key_fingerprint": fingerprint,
            "mac": _head_mac(key, seq, hash_, fingerprint)}
    data = canonical_json(head) + b"\n"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def _check_tail_against_head(path: Path, seq: int, hash_: str, key: bytes) -> None:
    head = read_head(path)
    if head is None:
        if seq == 0:
            return
        raise LedgerIntegrityError(
            f"{path} holds {seq} entries but its head checkpoint {head_path(path)} is missing; "
            "run `clinical-mlops audit verify`"
        )
    problem = _head_problem(head, key)
    if problem:
        raise LedgerIntegrityError(f"{path}: {problem}; nothing was appended")
    if (head["seq"], head["hash"]) != (seq, hash_):
        raise LedgerIntegrityError(
            f"{path}: the file ends at entry {seq} but the signed head records entry {head['seq']} "
            "(truncated, forged append or interrupted write); nothing was appended — run `clinical-mlops audit verify`"
        )


# ---------------------------------------------------------------------------------------------
# natural-key index (idempotent recording), cached per process and read incrementally
# ---------------------------------------------------------------------------------------------


@dataclass
class _KeyIndex:
    inode: int = -1
    offset: int = 0
    keys: set[str] = field(default_factory=set)


_KEY_INDEXES: dict[str, _KeyIndex] = {}


def _recorded_keys(path: Path, fh: Any, size: int) -> _KeyIndex:
    """Natural keys of every entry, reading only what was appended since the last call."""
    index = _KEY_INDEXES.setdefault(str(path.resolve()), _KeyIndex())
    inode = os.fstat(fh.fileno()).st_ino
    if index.inode != inode or index.offset > size:
        index.inode, index.offset, index.keys = inode, 0, set()
    if index.offset < size:
        fh.seek(index.offset)
        data = fh.read(size - index.offset)
        for line in data.splitlines():
            if b'"natural_key"' in line:
                key = json.loads(line)["payload"].get("natural_key")
                if key is not None:
                    index.keys.add(str(key))
        index.offset = size
    return index


# ---------------------------------------------------------------------------------------------
# append
# ---------------------------------------------------------------------------------------------


def append_many(
    path: Path | str,
    events: Iterable[Event],
    *,
    key: bytes | str | None = None,
    skip_recorded: bool = True,
    durable: bool = True,
) -> list[LedgerEntry]:
    """Append events in order under one lock and one fsync; returns the entries written.

    Events whose ``natural_key`` is already in the ledger are skipped (``skip_recorded``), so
    recording the same Dagster event or warehouse row twice is a no-op. Refuses to extend a
    ledger whose tail does not match its signed head (:class:`LedgerIntegrityError`).
    """
    path = Path(path)
    events = list(events)
    if not events:
        return []
    secret = _key(key)
    actor = default_actor()
    payloads = [  # refused before taking the lock
        _checked(event.payload if event.natural_key is None else {**event.payload, "natural_key": str(event.natural_key)})
        for event in events
    ]
    with _locked(path, exclusive=True) as fh:
        seq, prev, size = _read_tail(fh)
        _check_tail_against_head(path, seq, prev, secret)
        wants_index = skip_recorded and any(event.natural_key is not None for event in events)
        index = _recorded_keys(path, fh, size) if wants_index else None
        written: list[LedgerEntry] = []
        lines: list[bytes] = []
        fresh: set[str] = set()
        for event, (payload, payload_bytes) in zip(events, payloads):
            natural = None if event.natural_key is None else str(event.natural_key)
            if index is not None and natural is not None and (natural in index.keys or natural in fresh):
                continue
            seq += 1
            body, line = _make_entry(seq, prev, event, payload, payload_bytes, actor)
            prev = body["hash"]
            lines.append(line)
            written.append(LedgerEntry.from_dict(body))
            if natural is not None:
                fresh.add(natural)
        if not lines:
            return []
        fh.seek(0, os.SEEK_END)
        data = b"".join(lines)
        fh.write(data)
        fh.flush()
        if durable:
            os.fsync(fh.fileno())
        _write_head(path, seq, prev, secret, durable=durable)
        if index is not None:
            index.keys |= fresh
            index.offset = size + len(data)
    return written


def append(
    path: Path | str,
    *,
    event_type: str,
    subject: str,
    payload: Mapping[str, Any] | None = None,
    actor: str | None = None,
    natural_key: str | None = None,
    key: bytes | str | None = None,
) -> LedgerEntry | None:
    """Append one entry; None when ``natural_key`` was already recorded."""
    written = append_many(
        path, [Event(event_type, subject, payload or {}, actor=actor, natural_key=natural_key)], key=key
    )
    return written[0] if written else None


# ---------------------------------------------------------------------------------------------
# read, amend
# ---------------------------------------------------------------------------------------------


def read_entries(path: Path | str, *, start: int = 1, end: int | None = None) -> Iterator[LedgerEntry]:
    """Parsed entries with ``start <= seq <= end`` (no verification; use :func:`verify`).

    Holds a shared lock while iterating: consume or close the iterator before appending.
    """
    path = Path(path)
    if not path.exists():
        return
    with _locked(path, exclusive=False) as fh:
        fh.seek(0)
        for number, line in enumerate(fh, 1):
            if number < start:
                continue
            if end is not None and number > end:
                break
            yield LedgerEntry.from_dict(json.loads(line))


def effective_payload(path: Path | str, seq: int) -> dict[str, Any]:
    """The payload of entry ``seq`` with every later amendment applied, in ledger order."""
    target: dict[str, Any] | None = None
    for entry in read_entries(path):
        if entry.seq == seq:
            target = dict(entry.payload)
        elif target is not None and entry.event_type == "amendment" and entry.payload.get("amends_seq") == seq:
            target.update(entry.payload.get("new_value") or {})
    if target is None:
        raise LedgerError(f"no entry {seq} in {path}")
    return target


def amend(
    path: Path | str,
    seq: int,
    changes: Mapping[str, Any],
    *,
    reason: str,
    actor: str | None = None,
    key: bytes | str | None = None,
) -> LedgerEntry:
    """Record a correction to entry ``seq`` as a new entry holding the prior and the new values.

    The amended line is never touched; readers see the correction through
    :func:`effective_payload`. ``reason`` is required (who changed what, when and why).
    """
    if not reason or not reason.strip():
        raise LedgerError("an amendment needs a reason")
    if not changes:
        raise LedgerError("an amendment needs at least one changed field")
    if "natural_key" in changes:
        raise LedgerError("the natural key of an entry cannot be amended")
    with contextlib.closing(read_entries(path, start=seq, end=seq)) as found:
        original = next(found, None)
    if original is None or original.seq != seq:
        raise LedgerError(f"no entry {seq} in {path}")
    current = effective_payload(path, seq)
    prior = {k: current.get(k) for k in changes}
    entry = append(
        path,
        event_type="amendment",
        subject=original.subject,
        payload={
            "amends_seq": seq,
            "amends_hash": original.hash,
            "amends_event_type": original.event_type,
            "prior_value": prior,
            "new_value": dict(changes),
            "reason": reason,
        },
        actor=actor,
        key=key,
    )
    assert entry is not None
    return entry


# ---------------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerificationResult:
    """``first_bad_seq`` is the first position (1-based line = seq) that does not verify."""

    ok: bool
    entries: int
    first_bad_seq: int | None
    problem: str | None
    head_seq: int | None = None
    last_hash: str | None = None
    mirror_checked: bool = False
    key_fingerprint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        if self.ok:
            mirror = "; matches the DuckDB mirror" if self.mirror_checked else ""
            return f"ledger OK: {self.entries} entries, head {self.head_seq} verified{mirror}"
        where = f" at entry {self.first_bad_seq}" if self.first_bad_seq is not None else ""
        return f"ledger FAILED{where}: {self.problem}"


_PAYLOAD_START = b'","payload":'
_PAYLOAD_END = b',"payload_sha256":"'


def _check_line(line: bytes, position: int, prev_hash: str, prev_prev_hash: str | None) -> tuple[str | None, int, str]:
    """(problem or None, bad position, this entry's hash)."""
    if not line.endswith(b"\n"):
        return "incomplete final entry (file truncated or write interrupted)", position, ""
    try:
        entry = json.loads(line.decode())
    except ValueError:
        return "not valid JSON (bytes altered)", position, ""
    if not isinstance(entry, dict) or entry.keys() != _FIELD_SET:
        return "fields missing, added or renamed (entry altered)", position, ""
    claimed = entry["hash"]
    if not isinstance(claimed, str) or _line_hash(line[:-1], claimed) != claimed:
        return "hash does not match the entry's content (entry altered)", position, ""
    # The payload's canonical bytes sit between the hash and payload_sha256 fields of a canonical
    # line; fall back to re-serialising for a line that hashes but is not canonical.
    start = line.find(_PAYLOAD_START, 0) + len(_PAYLOAD_START)
    end = line.rfind(_PAYLOAD_END)
    if _sha256(line[start:end]) != entry["payload_sha256"]:
        try:
            payload_ok = _sha256(canonical_json(entry["payload"])) == entry["payload_sha256"]
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


def verify(
    path: Path | str,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    key: bytes | str | None = None,
) -> VerificationResult:
    """Recompute the chain, check the signed head and (with ``con``) the DuckDB mirror.

    Detects one altered byte, a deleted, inserted, duplicated or reordered entry, a truncated
    file, an entry appended past the head, and a forged head; names the first bad position.
    """
    path = Path(path)
    secret = _key(key)
    fingerprint = _key_fingerprint(secret)

    def fail(position: int | None, problem: str, entries: int, head: dict | None) -> VerificationResult:
        return VerificationResult(False, entries, position, problem, head["seq"] if head else None,
                                  None, con is not None, fingerprint)

    if not path.exists():
        head = read_head(path)
        if head is None:
            return VerificationResult(True, 0, None, None, 0, GENESIS_HASH, False, fingerprint)
        return fail(1, f"the ledger file {path} is missing but its head records {head['seq']} entries", 0, head)

    expected: dict[int, str] = {}
    if con is not None:
        expected = dict(_mirror_hashes(con) or [])
    with _locked(path, exclusive=False) as fh:
        head = read_head(path)
        fh.seek(0)
        prev, prev_prev = GENESIS_HASH, None
        count = 0
        for count, line in enumerate(fh, 1):
            problem, bad, this = _check_line(line, count, prev, prev_prev)
            if problem:
                return fail(bad, problem, count - 1, head)
            if expected and expected.get(count, this) != this:
                return fail(count, f"entry {count} differs from the DuckDB mirror (the file or the mirror was altered)",
                            count, head)
            prev_prev, prev = prev, this

    if expected:
        last = max(expected)
        if last > count:
            return fail(count + 1, f"file truncated: the DuckDB mirror holds entries up to {last}, the file {count}",
                        count, head)
        if len(expected) != last:
            missing = next(seq for seq in range(1, last + 1) if seq not in expected)
            return fail(missing, f"the DuckDB mirror lacks entry {missing} (mirror rows deleted)", count, head)
    if head is None:
        if count == 0:
            return VerificationResult(True, 0, None, None, 0, GENESIS_HASH, con is not None, fingerprint)
        return fail(count, "the head checkpoint is missing (truncation and forged appends cannot be ruled out)",
                    count, None)
    head_problem = _head_problem(head, secret)
    if head_problem:
        return fail(head["seq"] if head["seq"] > 0 else None, head_problem, count, head)
    if count < head["seq"]:
        return fail(count + 1, f"file truncated: the signed head records {head['seq']} entries, the file holds {count}",
                    count, head)
    if count > head["seq"]:
        return fail(head["seq"] + 1, f"{count - head['seq']} entries after the signed head "
                    f"(entry {head['seq']}): forged or unsigned append", count, head)
    if count and prev != head["hash"]:
        return fail(count, "the chain does not end on the signed head's hash (entries rewritten)", count, head)
    return VerificationResult(True, count, None, None, head["seq"], prev, con is not None, fingerprint)


def _mirror_hashes(con: duckdb.DuckDBPyConnection) -> list[tuple[int, str]] | None:
    if not con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'audit' AND table_name = 'ledger'"
    ).fetchall()[0][0]:
        return None
    return con.execute("SELECT seq, hash FROM audit.ledger ORDER BY seq").fetchall()


# ---------------------------------------------------------------------------------------------
# reseal (recovery from an interrupted write), audited
# ---------------------------------------------------------------------------------------------


def reseal(path: Path | str, *, reason: str, actor: str | None = None, key: bytes | str | None = None) -> LedgerEntry:
    """Re-sign the head after an interrupted write, and record that it happened.

    Only for a ledger whose chain verifies: an incomplete final line past the head is cut off,
    complete entries past the head are adopted, and a ``ledger_resealed`` entry records the old
    head, what was adopted or cut, and why. A ledger whose chain is broken is refused — restore
    it from a copy instead.
    """
    if not reason or not reason.strip():
        raise LedgerError("resealing needs a reason")
    path = Path(path)
    secret = _key(key)
    with _locked(path, exclusive=True) as fh:
        old_head = read_head(path)
        fh.seek(0)
        data = fh.read()
        cut = 0
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            cut = len(data) - keep
            data = data[:keep]
        prev, prev_prev, count = GENESIS_HASH, None, 0
        for count, line in enumerate(data.splitlines(keepends=True), 1):
            problem, bad, this = _check_line(line, count, prev, prev_prev)
            if problem:
                raise LedgerIntegrityError(f"cannot reseal: entry {bad}: {problem}")
            prev_prev, prev = prev, this
        if old_head is not None and not old_head.get("corrupt") and old_head["seq"] > count:
            raise LedgerIntegrityError(
                f"cannot reseal: the head records {old_head['seq']} entries but only {count} remain (truncated)"
            )
        if cut:
            fh.truncate(len(data))
            fh.flush()
            os.fsync(fh.fileno())
        _write_head(path, count, prev, secret)
    entry = append(
        path,
        event_type="ledger_resealed",
        subject=f"ledger:{path.name}",
        payload={
            "previous_head_seq": None if old_head is None else old_head.get("seq"),
            "previous_head_hash": None if old_head is None else old_head.get("hash"),
            "adopted_entries": count - (old_head["seq"] if old_head and old_head["seq"] >= 0 else 0),
            "truncated_bytes": cut,
            "reason": reason,
        },
        actor=actor,
        key=secret,
    )
    assert entry is not None
    return entry


# ---------------------------------------------------------------------------------------------
# DuckDB mirror
# ---------------------------------------------------------------------------------------------

MIRROR_DDL = """CREATE TABLE IF NOT EXISTS audit.ledger (
    seq BIGINT PRIMARY KEY,
    ts TIMESTAMP NOT NULL,
    actor VARCHAR NOT NULL,
    event_type VARCHAR NOT NULL,
    subject VARCHAR NOT NULL,
    natural_key VARCHAR,
    payload_json VARCHAR NOT NULL,
    payload_sha256 VARCHAR NOT NULL,
    prev_hash VARCHAR NOT NULL,
    hash VARCHAR NOT NULL
)"""


@dataclass(frozen=True)
class MirrorResult:
    inserted: int
    total: int


def mirror_to_duckdb(con: duckdb.DuckDBPyConnection, path: Path | str) -> MirrorResult:
    """Copy entries not yet mirrored into ``audit.ledger`` (idempotent and incremental).

    Refuses (:class:`LedgerIntegrityError`) when the file's entry at the mirror's last ``seq``
    has a different hash: the file and the mirror disagree, which ``audit verify`` reports.
    """
    import pandas as pd

    path = Path(path)
    con.execute("CREATE SCHEMA IF NOT EXISTS audit")
    con.execute(MIRROR_DDL)
    last = con.execute("SELECT seq, hash FROM audit.ledger ORDER BY seq DESC LIMIT 1").fetchall()
    last_seq, last_hash = (int(last[0][0]), last[0][1]) if last else (0, GENESIS_HASH)
    rows: list[tuple] = []
    if path.exists():
        with _locked(path, exclusive=False) as fh:
            fh.seek(0)
            prev = GENESIS_HASH
            for number, line in enumerate(fh, 1):
                if number < last_seq:
                    continue
                if not line.endswith(b"\n"):
                    break
                entry = json.loads(line)
                if number == last_seq:
                    if entry["hash"] != last_hash:
                        raise LedgerIntegrityError(
                            f"entry {number} in {path} differs from the DuckDB mirror; run `clinical-mlops audit verify`"
                        )
                    prev = entry["hash"]
                    continue
                if entry["seq"] != number or entry["prev_hash"] != prev:
                    raise LedgerIntegrityError(f"entry {number} in {path} breaks the chain; not mirrored")
                prev = entry["hash"]
                start = line.find(_PAYLOAD_START) + len(_PAYLOAD_START)
                payload_bytes = line[start:line.rfind(_PAYLOAD_END)]
                if _sha256(payload_bytes) != entry["payload_sha256"]:
                    payload_bytes = canonical_json(entry["payload"])
                rows.append((
                    entry["seq"], entry["ts"], entry["actor"], entry["event_type"], entry["subject"],
                    entry["payload"].get("natural_key"), payload_bytes.decode(), entry["payload_sha256"],
                    entry["prev_hash"], entry["hash"],
                ))
    if rows:
        frame = pd.DataFrame(rows, columns=["seq", "ts", "actor", "event_type", "subject", "natural_key",
                                            "payload_json", "payload_sha256", "prev_hash", "hash"])
        con.register("ledger_rows", frame)
        try:
            con.execute(
                """INSERT INTO audit.ledger SELECT seq, strptime(ts, '%Y-%m-%dT%H:%M:%S.%fZ'), actor, event_type,
                   subject, natural_key, payload_json, payload_sha256, prev_hash, hash FROM ledger_rows"""
            )
        finally:
            con.unregister("ledger_rows")
    total = con.execute("SELECT count(*) FROM audit.ledger").fetchall()[0][0]
    return MirrorResult(inserted=len(rows), total=int(total))
