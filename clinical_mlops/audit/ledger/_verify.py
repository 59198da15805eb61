"""Verification of the whole ledger (chain, signed head, DuckDB mirror) and the audited reseal."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from clinical_mlops.audit.ledger._chain import GENESIS_HASH, LedgerEntry, LedgerError, LedgerIntegrityError, check_line
from clinical_mlops.audit.ledger._head import head_problem, key_fingerprint, read_head, signing_key, write_head
from clinical_mlops.audit.ledger._mirror import mirror_hashes
from clinical_mlops.audit.ledger._store import append, locked

__all__ = ["VerificationResult", "reseal", "verify"]


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
    secret = signing_key(key)
    fingerprint = key_fingerprint(secret)

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
        expected = dict(mirror_hashes(con) or [])
    with locked(path, exclusive=False) as fh:
        head = read_head(path)
        fh.seek(0)
        prev, prev_prev = GENESIS_HASH, None
        count = 0
        for count, line in enumerate(fh, 1):
            problem, bad, this = check_line(line, count, prev, prev_prev)
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
    problem = head_problem(head, secret)
    if problem:
        return fail(head["seq"] if head["seq"] > 0 else None, problem, count, head)
    if count < head["seq"]:
        return fail(count + 1, f"file truncated: the signed head records {head['seq']} entries, the file holds {count}",
                    count, head)
    if count > head["seq"]:
        return fail(head["seq"] + 1, f"{count - head['seq']} entries after the signed head "
                    f"(entry {head['seq']}): forged or unsigned append", count, head)
    if count and prev != head["hash"]:
        return fail(count, "the chain does not end on the signed head's hash (entries rewritten)", count, head)
    return VerificationResult(True, count, None, None, head["seq"], prev, con is not None, fingerprint)


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
    secret = signing_key(key)
    with locked(path, exclusive=True) as fh:
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
            problem, bad, this = check_line(line, count, prev, prev_prev)
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
        write_head(path, count, prev, secret)
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
