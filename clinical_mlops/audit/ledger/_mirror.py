"""The DuckDB mirror ``audit.ledger``: a third, independent copy of the chain, filled incrementally."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb

from clinical_mlops.audit.ledger._chain import GENESIS_HASH, LedgerIntegrityError, payload_bytes_of
from clinical_mlops.audit.ledger._store import locked

__all__ = ["MIRROR_DDL", "MirrorResult", "mirror_hashes", "mirror_to_duckdb"]

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


def mirror_hashes(con: duckdb.DuckDBPyConnection) -> list[tuple[int, str]] | None:
    """(seq, hash) of every mirrored entry in order, or None when there is no mirror yet."""
    if not con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'audit' AND table_name = 'ledger'"
    ).fetchall()[0][0]:
        return None
    return con.execute("SELECT seq, hash FROM audit.ledger ORDER BY seq").fetchall()


def mirror_to_duckdb(con: duckdb.DuckDBPyConnection, path: Path | str) -> MirrorResult:
    """Copy entries not yet mirrored into ``audit.ledger`` (idempotent and incremental).

    Refuses (:class:`LedgerIntegrityError`) when the file's entry at the mirror's last ``seq``
    has a different hash: the file and the mirror disagree, which ``audit verify`` reports.
    """
    import pandas as pd  # only for the insert: keeps `import ledger` light for the CLI

    path = Path(path)
    con.execute("CREATE SCHEMA IF NOT EXISTS audit")
    con.execute(MIRROR_DDL)
    last = con.execute("SELECT seq, hash FROM audit.ledger ORDER BY seq DESC LIMIT 1").fetchall()
    last_seq, last_hash = (int(last[0][0]), last[0][1]) if last else (0, GENESIS_HASH)
    rows: list[tuple] = []
    if path.exists():
        with locked(path, exclusive=False) as fh:
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
                rows.append((
                    entry["seq"], entry["ts"], entry["actor"], entry["event_type"], entry["subject"],
                    entry["payload"].get("natural_key"), payload_bytes_of(line, entry).decode(), entry["payload_sha256"],
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
