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

This package is the public face; the parts live in private modules: ``_chain`` (entries,
canonical line, hashing, the check of one line), ``_payload`` (the payload guard), ``_head``
(keys and the signed head), ``_store`` (file lock, append, read, amend), ``_verify`` (verify,
reseal) and ``_mirror`` (the DuckDB mirror).
"""

from clinical_mlops.audit.ledger._chain import (
    FIELDS,
    GENESIS_HASH,
    Event,
    LedgerEntry,
    LedgerError,
    LedgerIntegrityError,
    PayloadError,
)
from clinical_mlops.audit.ledger._head import (
    DEVELOPMENT_KEY,
    HEAD_ENV,
    KEY_ENV,
    head_path,
    key_fingerprint,
    read_head,
    signing_key,
    write_head,
)
from clinical_mlops.audit.ledger._mirror import MIRROR_DDL, MirrorResult, mirror_to_duckdb
from clinical_mlops.audit.ledger._payload import (
    FORBIDDEN_KEYS,
    MAX_LIST_LENGTH,
    MAX_PAYLOAD_BYTES,
    check_payload,
    json_safe,
)
from clinical_mlops.audit.ledger._store import (
    ACTOR_ENV,
    LEDGER_ENV,
    amend,
    append,
    append_many,
    clear_key_index,
    default_actor,
    default_ledger_path,
    effective_payload,
    read_entries,
)
from clinical_mlops.audit.ledger._verify import VerificationResult, reseal, verify

__all__ = [
    "ACTOR_ENV",
    "DEVELOPMENT_KEY",
    "FIELDS",
    "FORBIDDEN_KEYS",
    "GENESIS_HASH",
    "HEAD_ENV",
    "KEY_ENV",
    "LEDGER_ENV",
    "MAX_LIST_LENGTH",
    "MAX_PAYLOAD_BYTES",
    "MIRROR_DDL",
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
    "check_payload",
    "clear_key_index",
    "default_actor",
    "default_ledger_path",
    "effective_payload",
    "head_path",
    "json_safe",
    "key_fingerprint",
    "mirror_to_duckdb",
    "read_entries",
    "read_head",
    "reseal",
    "signing_key",
    "verify",
    "write_head",
]
