"""The payload guard: plain JSON only, and nothing that could carry a patient row.

:func:`check_payload` refuses identifier keys (``patient_key``, ``encounter_id`` …), long lists,
oversized payloads and values that look like SSNs or MRNs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from clinical_mlops.audit.ledger._chain import PayloadError
from clinical_mlops.core.reporting import canonical_json

__all__ = [
    "FORBIDDEN_KEYS",
    "MAX_LIST_LENGTH",
    "MAX_PAYLOAD_BYTES",
    "check_payload",
    "checked_payload",
    "json_safe",
]

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
_SSN_TAIL = re.compile(r"-[0-9]{2}-[0-9]{4}")
_FORBIDDEN_KEY_PATTERN = re.compile('"(' + "|".join(sorted(FORBIDDEN_KEYS)) + ')":', re.IGNORECASE)


def json_safe(value: Any, where: str = "value") -> Any:
    """JSON-safe copy: tuples to lists, NaN/inf to None, datetimes to ISO strings, numpy scalars to Python.

    Raises :class:`PayloadError` (naming ``where``) for a list long enough to be rows, or a value
    that is not JSON.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return json_safe(value.item(), where)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_LIST_LENGTH:
            raise PayloadError(
                f"{where}: a list of {len(value)} items looks like rows; record a count or a hash instead"
            )
        return [json_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise PayloadError(f"{where}: {type(value).__name__} is not JSON; pass counts, hashes, ids or metrics")


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


def checked_payload(payload: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The payload as plain JSON and its canonical bytes, or :class:`PayloadError`.

    Keys and values are checked on the canonical text: a quote inside a JSON string is always
    escaped, so ``"patient_key":`` there can only be a key.
    """
    if not isinstance(payload, Mapping):
        raise PayloadError(f"payload must be a mapping, got {type(payload).__name__}")
    plain = json_safe(payload, "payload")
    text = canonical_json(plain)
    data = text.encode()
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload is {len(data):,} bytes (limit {MAX_PAYLOAD_BYTES:,}); record a hash of large content")
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
    return checked_payload(payload)[0]
