"""API keys of the scoring service, stored only as sha256 hashes.

A key is ``cmk_<key id>_<secret>``: 32 random bytes (``secrets.token_urlsafe``), shown once
when created and never stored. The keys file (default ``data/serving/api_keys.json``, mode
0600, replaced atomically) holds, per key, its id, a name for the calling system, the sha256
of the whole key, and creation/revocation times. Because keys are long random strings, one
sha256 is enough (a slow password hash protects guessable secrets, which these are not).

The service identifies a caller by the key id, which is safe to log; the key itself never is.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clinical_mlops.core.settings import default_paths

__all__ = [
    "FILE_VERSION",
    "KEY_PREFIX",
    "ApiKeyError",
    "ApiKeyRecord",
    "ApiKeyStore",
    "create_key",
    "default_keys_path",
    "key_sha256",
    "read_keys",
    "revoke_key",
    "serving_dir",
]

KEY_PREFIX = "cmk"
FILE_VERSION = 1


def serving_dir() -> Path:
    """``$CLINICAL_MLOPS_SERVING_DIR`` or ``<data dir>/serving``: the scoring service's files."""
    return Path(os.environ.get("CLINICAL_MLOPS_SERVING_DIR", default_paths().data_dir / "serving"))


def default_keys_path() -> Path:
    """``$CLINICAL_MLOPS_API_KEYS`` or ``<serving dir>/api_keys.json``."""
    return Path(os.environ.get("CLINICAL_MLOPS_API_KEYS", serving_dir() / "api_keys.json"))


class ApiKeyError(ValueError):
    """The keys file is malformed or an operation on it is not possible (message says why)."""


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    name: str
    sha256: str
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict:
        return {"key_id": self.key_id, "name": self.name, "sha256": self.sha256,
                "created_at": self.created_at, "revoked_at": self.revoked_at}


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_keys(path: Path) -> list[ApiKeyRecord]:
    """Every key record in the file (an absent file holds none)."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise ApiKeyError(f"{path}: not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("keys"), list):
        raise ApiKeyError(f"{path}: expected an object with a 'keys' list")
    records = []
    for i, item in enumerate(raw["keys"]):
        try:
            records.append(ApiKeyRecord(**item))
        except TypeError as exc:
            raise ApiKeyError(f"{path}: keys[{i}] has unexpected or missing fields") from exc
    return records


def _write_keys(path: Path, records: list[ApiKeyRecord]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    payload = json.dumps({"version": FILE_VERSION, "keys": [r.as_dict() for r in records]}, indent=2) + "\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, payload.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def create_key(path: Path, name: str) -> tuple[str, ApiKeyRecord]:
    """Create a key for the calling system ``name``; returns (the key, shown once; its record)."""
    name = name.strip()
    if not name:
        raise ApiKeyError("a key needs a non-empty --name (the calling system)")
    records = read_keys(path)
    if any(r.name == name and r.active for r in records):
        raise ApiKeyError(f"an active key named '{name}' exists: revoke it first or choose another name")
    key_id = secrets.token_hex(4)
    while any(r.key_id == key_id for r in records):
        key_id = secrets.token_hex(4)
    key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKeyRecord(key_id=key_id, name=name, sha256=key_sha256(key), created_at=_now())
    _write_keys(path, [*records, record])
    return key, record


def revoke_key(path: Path, key_id: str) -> ApiKeyRecord:
    records = read_keys(path)
    for i, record in enumerate(records):
        if record.key_id == key_id:
            if not record.active:
                raise ApiKeyError(f"key {key_id} is already revoked")
            records[i] = ApiKeyRecord(**{**record.as_dict(), "revoked_at": _now()})
            _write_keys(path, records)
            return records[i]
    raise ApiKeyError(f"no key with id {key_id}")


class ApiKeyStore:
    """Looks up callers by key; re-reads the file when it changes, so new keys work without a restart."""

    def __init__(self, path: Path, *, recheck_seconds: float = 1.0) -> None:
        self.path = Path(path)
        self.recheck_seconds = recheck_seconds
        self._lock = threading.Lock()
        self._by_hash: dict[str, ApiKeyRecord] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._reload()

    def _reload(self) -> None:
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp and self._stamp is not None:
            return
        records = read_keys(self.path) if stamp is not None else []
        self._by_hash = {r.sha256: r for r in records if r.active}
        self._stamp = stamp

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.recheck_seconds:
            return
        with self._lock:
            self._checked = now
            self._reload()

    @property
    def active_keys(self) -> int:
        return len(self._by_hash)

    def authenticate(self, presented: str | None) -> ApiKeyRecord | None:
        """The record of an active key, or None."""
        if not presented or not presented.startswith(f"{KEY_PREFIX}_"):
            return None
        self._maybe_reload()
        digest = key_sha256(presented)
        record = self._by_hash.get(digest)
        if record is None or not hmac.compare_digest(record.sha256, digest):
            return None
        return record
