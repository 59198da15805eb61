"""Verify an audit bundle offline with nothing but Python's standard library.

Copied into every bundle as ``verify_bundle.py``; run it inside the bundle folder::

    python verify_bundle.py            # or: python verify_bundle.py path/to/bundle

It checks that

1. ``manifest.json`` has the sha256 written in ``manifest.sha256``, and every file it lists has
   the size and sha256 recorded there (and no other file was added beside them);
2. ``ledger/segment.jsonl`` is an unbroken hash chain: each entry's hash matches its content,
   sequence numbers follow each other, each entry links to the one before, and the last entry
   is the one recorded in ``ledger/head.json`` (whose HMAC is also checked when the ledger key
   is in ``$CLINICAL_MLOPS_LEDGER_KEY``).

Exit status 0 when everything verifies, 1 otherwise; the first problem is printed.

Standard library only, on purpose: this file must run inside a bundle on a machine with nothing
installed, so it keeps its own copy of the canonical JSON rule (:func:`_canonical`, the same
``json.dumps`` arguments as :func:`clinical_mlops.core.reporting.canonical_json`) and of the
head's key fingerprint and HMAC instead of importing them from the package.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
from pathlib import Path

HASH_FRAGMENT = b',"hash":"'
FIELDS = {"seq", "ts", "actor", "event_type", "subject", "payload", "payload_sha256", "prev_hash", "hash"}
NOT_IN_MANIFEST = {"manifest.json", "manifest.sha256"}

__all__ = ["FIELDS", "NOT_IN_MANIFEST", "main", "sha256_file", "verify_bundle", "verify_manifest", "verify_segment"]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _canonical(obj) -> bytes:
    """Canonical JSON bytes (sorted keys, no whitespace, UTF-8, no NaN): a stdlib copy of the package's rule."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def verify_manifest(root: Path) -> list[str]:
    """Problems with ``manifest.json`` and the files it lists (empty when they all match)."""
    problems: list[str] = []
    manifest_path, digest_path = root / "manifest.json", root / "manifest.sha256"
    if not manifest_path.exists() or not digest_path.exists():
        return ["manifest.json or manifest.sha256 is missing"]
    recorded = digest_path.read_text().split()[0]
    if sha256_file(manifest_path) != recorded:
        problems.append("manifest.json does not match manifest.sha256 (manifest altered)")
    files = json.loads(manifest_path.read_text())["files"]
    for name, info in sorted(files.items()):
        path = root / name
        if not path.is_file():
            problems.append(f"{name}: listed in the manifest but missing")
        elif path.stat().st_size != info["bytes"] or sha256_file(path) != info["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest (file altered)")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    extra = sorted(present - set(files) - NOT_IN_MANIFEST)
    if extra:
        problems.append("files not in the manifest: " + ", ".join(extra[:10]))
    return problems


def verify_segment(segment: Path, head: dict | None, key: bytes | None = None) -> tuple[bool, int, str]:
    """(ok, entries checked, message) for a contiguous ledger segment ending at ``head``."""
    prev = None
    expected_seq = None
    last_hash = None
    count = 0
    with open(segment, "rb") as fh:
        for count, line in enumerate(fh, 1):
            if not line.endswith(b"\n"):
                return False, count, f"segment line {count}: incomplete entry"
            try:
                entry = json.loads(line.decode())
            except ValueError:
                return False, count, f"segment line {count}: not valid JSON"
            if not isinstance(entry, dict) or set(entry) != FIELDS:
                return False, count, f"segment line {count}: fields altered"
            seq = entry["seq"]
            fragment = HASH_FRAGMENT + str(entry["hash"]).encode() + b'"'
            body = line[:-1]
            at = body.find(fragment)
            if at < 0 or hashlib.sha256(body[:at] + body[at + len(fragment):]).hexdigest() != entry["hash"]:
                return False, count, f"entry {seq}: hash does not match its content"
            if hashlib.sha256(_canonical(entry["payload"])).hexdigest() != entry["payload_sha256"]:
                return False, count, f"entry {seq}: payload_sha256 does not match the payload"
            if expected_seq is not None and seq != expected_seq:
                return False, count, f"entry {seq} where {expected_seq} was expected (deleted, inserted or reordered)"
            if prev is not None and entry["prev_hash"] != prev:
                return False, count, f"entry {seq} does not link to the entry before it"
            prev, last_hash, expected_seq = entry["hash"], entry["hash"], seq + 1
    if count == 0:
        return False, 0, "the ledger segment is empty"
    if head is None:
        return False, count, "ledger/head.json is missing"
    if head.get("seq") != expected_seq - 1 or head.get("hash") != last_hash:
        return False, count, "the segment does not end at the recorded head (truncated or extended)"
    if key is not None:
        fingerprint = hashlib.sha256(b"clinical-mlops-ledger-key:" + key).hexdigest()[:16]
        mac = hmac.new(key, _canonical({"seq": head["seq"], "hash": head["hash"], "key_fingerprint": fingerprint}),
                       "sha256").hexdigest()
        if head.get("key_fingerprint") != fingerprint or not hmac.compare_digest(mac, head.get("mac", "")):
            return False, count, "the head's signature does not verify with this key"
        return True, count, f"{count} entries chain to the head (entry {head['seq']}); head signature verified"
    return True, count, f"{count} entries chain to the head (entry {head['seq']}); head signature not checked (no key)"


def verify_bundle(root: Path | str) -> tuple[bool, list[str]]:
    """(ok, problems or messages) for the bundle folder ``root``: its manifest and its ledger segment."""
    root = Path(root)
    problems = verify_manifest(root)
    messages: list[str] = []
    segment = root / "ledger" / "segment.jsonl"
    if segment.exists():
        head_file = root / "ledger" / "head.json"
        head = json.loads(head_file.read_text()) if head_file.exists() else None
        key = os.environ.get("CLINICAL_MLOPS_LEDGER_KEY")
        ok, _count, message = verify_segment(segment, head, key.encode() if key else None)
        (messages if ok else problems).append(f"ledger segment: {message}")
    else:
        problems.append("ledger/segment.jsonl is missing")
    return not problems, problems or messages


def main(argv: list[str] | None = None) -> int:
    """Verify the bundle given as the first argument (default: the folder holding this file); print the result."""
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parent
    ok, lines = verify_bundle(root)
    print(("BUNDLE OK" if ok else "BUNDLE FAILED") + f": {root}")
    for line in lines:
        print(f"  {line}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
