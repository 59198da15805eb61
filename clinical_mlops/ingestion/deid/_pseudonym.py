"""Keyed pseudonymisation: HMAC-SHA256 in Python and the same value as a pure DuckDB SQL expression."""

from __future__ import annotations

import hashlib
import hmac
import os

__all__ = [
    "DEVELOPMENT_KEY",
    "PSEUDONYM_KEY_ENV",
    "hmac_sql",
    "key_fingerprint",
    "pseudonym_key_from_env",
    "pseudonymise",
]

PSEUDONYM_KEY_ENV = "CLINICAL_MLOPS_PSEUDONYM_KEY"
DEVELOPMENT_KEY = "clinical-mlops-development-key-not-for-production"
"""Documented key used when the environment provides none: fine for tests and demos,
never for real patient data (its pseudonyms can be recomputed by anyone)."""

_BLOCK_SIZE = 64  # SHA-256 block size in bytes


def pseudonym_key_from_env(env_var: str = PSEUDONYM_KEY_ENV) -> tuple[bytes, bool]:
    """Return ``(key, is_development_default)``.

    The key is the UTF-8 bytes of ``$env_var`` exactly as set; when the variable is unset,
    empty or only whitespace, the documented :data:`DEVELOPMENT_KEY` is returned with
    ``True`` so callers can refuse it, warn, or record it in metadata.
    """
    value = os.environ.get(env_var)
    if value is None or not value.strip():
        return DEVELOPMENT_KEY.encode("utf-8"), True
    return value.encode("utf-8"), False


def _check_length(length: int) -> None:
    if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= 64:
        raise ValueError(f"length must be an int between 1 and 64 hex characters, got {length!r}")


def _as_key(key: bytes | str) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"key must be bytes, got {type(key).__name__}")


def pseudonymise(value: str, key: bytes, length: int = 16) -> str:
    """HMAC-SHA256 of ``value`` (UTF-8) under ``key``, as lowercase hex truncated to ``length``."""
    _check_length(length)
    if not isinstance(value, str):
        raise TypeError(f"value must be str, got {type(value).__name__}")
    digest = hmac.new(_as_key(key), value.encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:length]


def _blob_literal(data: bytes) -> str:
    return "'" + "".join(f"\\x{b:02X}" for b in data) + "'::BLOB"


def hmac_sql(column_sql: str, key: bytes, length: int = 16) -> str:
    """A DuckDB SQL expression equal to ``pseudonymise(value, key, length)`` for each row.

    Pure SQL, vectorised, no UDF: ``HMAC(K, m) = H((K0 ^ opad) || H((K0 ^ ipad) || m))``
    where ``K0`` is the key (hashed first if longer than 64 bytes) zero-padded to 64 bytes.
    The two padded keys are computed here and embedded as BLOB literals; the message is
    ``encode(CAST(column AS VARCHAR))`` (UTF-8 bytes), DuckDB's ``sha256`` of a BLOB gives
    hex, ``unhex`` turns the inner digest back into bytes.  NULL in, NULL out.

    ``column_sql`` is a trusted SQL expression (e.g. a quoted column name).  The embedded
    literals are derived from the key: do not log the generated SQL.
    """
    _check_length(length)
    raw = _as_key(key)
    if len(raw) > _BLOCK_SIZE:
        raw = hashlib.sha256(raw).digest()
    padded = raw.ljust(_BLOCK_SIZE, b"\x00")
    ipad = bytes(b ^ 0x36 for b in padded)
    opad = bytes(b ^ 0x5C for b in padded)
    message = f"encode(CAST(({column_sql}) AS VARCHAR))"
    inner = f"unhex(sha256({_blob_literal(ipad)} || {message}))"
    outer = f"sha256({_blob_literal(opad)} || {inner})"
    return f"left({outer}, {length})"


def key_fingerprint(key: bytes) -> str:
    """First 12 hex characters of ``sha256(b"fingerprint:" + key)``.

    Identifies which key produced a set of pseudonyms (to store in metadata or the audit
    trail, and to detect a key change between runs) without revealing the key.
    """
    return hashlib.sha256(b"fingerprint:" + _as_key(key)).hexdigest()[:12]
