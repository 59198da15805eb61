"""The signed head checkpoint: the last ``seq`` and ``hash``, authenticated with HMAC-SHA256.

The key is ``$CLINICAL_MLOPS_LEDGER_KEY`` (or the documented development key, with a warning);
the head lives beside the ledger (``ledger.head``) or at ``$CLINICAL_MLOPS_LEDGER_HEAD``.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from pathlib import Path
from typing import Any

from clinical_mlops.audit.ledger._chain import LedgerIntegrityError, now, sha256
from clinical_mlops.core.reporting import canonical_json

__all__ = [
    "DEVELOPMENT_KEY",
    "HEAD_ENV",
    "KEY_ENV",
    "check_tail_against_head",
    "head_path",
    "head_problem",
    "key_fingerprint",
    "read_head",
    "signing_key",
    "write_head",
]

log = logging.getLogger("clinical_mlops.audit.ledger")

HEAD_ENV = "CLINICAL_MLOPS_LEDGER_HEAD"
KEY_ENV = "CLINICAL_MLOPS_LEDGER_KEY"
DEVELOPMENT_KEY = b"clinical-mlops-development-ledger-key (not secret)"


def head_path(path: Path | str) -> Path:
    """Where the signed head checkpoint of ``path`` lives."""
    if os.environ.get(HEAD_ENV):
        return Path(os.environ[HEAD_ENV])
    return Path(path).with_suffix(".head")


_warned_development_key = False


def signing_key(key: bytes | str | None = None) -> bytes:
    """The HMAC key of the head: ``key`` if given, else ``$CLINICAL_MLOPS_LEDGER_KEY``, else the development key.

    The development key is announced once per process with a warning.
    """
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


def key_fingerprint(key: bytes) -> str:
    """A short public fingerprint of the signing key (recorded in the head, shown by ``verify``)."""
    return sha256(b"clinical-mlops-ledger-key:" + key)[:16]


def _head_mac(key: bytes, seq: int, hash_: str, fingerprint: str) -> str:
    message = canonical_json({"seq": seq, "hash": hash_, "key_fingerprint": fingerprint}).encode()
    return hmac.new(key, message, "sha256").hexdigest()


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


def head_problem(head: dict[str, Any], key: bytes) -> str | None:
    """Why ``head`` does not verify under ``key``, or None when it does."""
    if head.get("corrupt"):
        return "the head checkpoint is not readable"
    fingerprint = key_fingerprint(key)
    if head["key_fingerprint"] != fingerprint:
        return (f"the head was signed with another key (fingerprint {head['key_fingerprint'] or 'none'}, "
                f"this key {fingerprint})")
    if not hmac.compare_digest(head["mac"], _head_mac(key, head["seq"], head["hash"], fingerprint)):
        return "the head checkpoint's signature does not verify (head altered or forged)"
    return None


def write_head(path: Path, seq: int, hash_: str, key: bytes, *, durable: bool = True) -> None:
    """Sign and overwrite the head of ``path`` in place (one small write, then fsync).

    Low level: the caller holds the ledger lock and has checked the chain. To recover a ledger
    use ``reseal``, which also records that it happened. The record is far smaller than a disk
    sector, so the write lands whole; a head that is nonetheless unreadable after a crash is
    reported by ``verify`` and repaired by ``reseal``.
    """
    target = head_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = key_fingerprint(key)
    head = {"seq": seq, "hash": hash_, "updated_at": now(), "key_fingerprint": fingerprint,
            "mac": _head_mac(key, seq, hash_, fingerprint)}
    data = canonical_json(head).encode() + b"\n"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def check_tail_against_head(path: Path, seq: int, hash_: str, key: bytes) -> None:
    """Refuse (:class:`LedgerIntegrityError`) a file whose last entry is not the signed head."""
    head = read_head(path)
    if head is None:
        if seq == 0:
            return
        raise LedgerIntegrityError(
            f"{path} holds {seq} entries but its head checkpoint {head_path(path)} is missing; "
            "run `clinical-mlops audit verify`"
        )
    problem = head_problem(head, key)
    if problem:
        raise LedgerIntegrityError(f"{path}: {problem}; nothing was appended")
    if (head["seq"], head["hash"]) != (seq, hash_):
        raise LedgerIntegrityError(
            f"{path}: the file ends at entry {seq} but the signed head records entry {head['seq']} "
            "(truncated, forged append or interrupted write); nothing was appended — run `clinical-mlops audit verify`"
        )
