"""The ledger file: where it is, its lock, appending (idempotent by natural key), reading, amending.

Appends hold an exclusive ``fcntl.flock`` on the file while they read the tail, check it
against the signed head, write and ``fsync`` the new lines and replace the head; readers take a
shared lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinical_mlops.audit.ledger._chain import (
    GENESIS_HASH, Event, LedgerEntry, LedgerError, LedgerIntegrityError, make_entry,
)
from clinical_mlops.audit.ledger._head import check_tail_against_head, signing_key, write_head
from clinical_mlops.audit.ledger._payload import checked_payload
from clinical_mlops.core.settings import default_paths

__all__ = [
    "ACTOR_ENV",
    "LEDGER_ENV",
    "amend",
    "append",
    "append_many",
    "clear_key_index",
    "default_actor",
    "default_ledger_path",
    "effective_payload",
    "locked",
    "read_entries",
]

LEDGER_ENV = "CLINICAL_MLOPS_LEDGER"
ACTOR_ENV = "CLINICAL_MLOPS_ACTOR"


def default_ledger_path(warehouse_path: Path | str | None = None) -> Path:
    """``$CLINICAL_MLOPS_LEDGER``, else ``audit/ledger.jsonl`` beside the warehouse it audits.

    With no warehouse given, the project's data folder (``data/audit/ledger.jsonl``).
    """
    if os.environ.get(LEDGER_ENV):
        return Path(os.environ[LEDGER_ENV])
    if warehouse_path is not None:
        return Path(warehouse_path).resolve().parent / "audit" / "ledger.jsonl"
    return default_paths().data_dir / "audit" / "ledger.jsonl"


def default_actor() -> str:
    """Who is acting: ``$CLINICAL_MLOPS_ACTOR`` or the operating-system user."""
    if os.environ.get(ACTOR_ENV):
        return os.environ[ACTOR_ENV]
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        return f"uid:{os.getuid()}"


@contextlib.contextmanager
def locked(path: Path, *, exclusive: bool) -> Iterator[Any]:
    """The ledger file opened ``a+b`` under an exclusive (writers) or shared (readers) ``flock``."""
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


# ---------------------------------------------------------------------------------------------
# natural-key index (idempotent recording), cached per process and read incrementally
# ---------------------------------------------------------------------------------------------


@dataclass
class _KeyIndex:
    inode: int = -1
    offset: int = 0
    keys: set[str] = field(default_factory=set)


_KEY_INDEXES: dict[str, _KeyIndex] = {}


def clear_key_index() -> None:
    """Forget the cached natural keys, so the next append re-reads them from the file (as a new process does)."""
    _KEY_INDEXES.clear()


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
    secret = signing_key(key)
    actor = default_actor()
    payloads = [  # refused before taking the lock
        checked_payload(event.payload if event.natural_key is None
                        else {**event.payload, "natural_key": str(event.natural_key)})
        for event in events
    ]
    with locked(path, exclusive=True) as fh:
        seq, prev, size = _read_tail(fh)
        check_tail_against_head(path, seq, prev, secret)
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
            body, line = make_entry(seq, prev, event, payload, payload_bytes, actor)
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
        write_head(path, seq, prev, secret, durable=durable)
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
    """Parsed entries with ``start <= seq <= end`` (no verification; use ``verify``).

    Holds a shared lock while iterating: consume or close the iterator before appending.
    """
    path = Path(path)
    if not path.exists():
        return
    with locked(path, exclusive=False) as fh:
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
