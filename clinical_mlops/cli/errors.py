"""Known failure classes turned into one line for the command line, instead of a traceback.

A full disk, a read-only file system, a warehouse locked by another process, an unreadable
MLflow store or a broken audit ledger are operating conditions, not bugs: the user needs the
path and the problem. Anything not recognised here is a bug and keeps its traceback.
"""

import errno
import os
import re
import traceback
from collections.abc import Mapping

import duckdb

from clinical_mlops.core.settings import default_paths

__all__ = ["IDENTIFIER_PHRASES", "describe", "describe_failed_checks", "describe_identifier_refusal",
           "describe_warehouse_error", "run_error", "without_dagster_names"]

_OS_HINTS: dict[int, str] = {
    errno.ENOSPC: "free space on that file system and rerun",
    errno.EDQUOT: "the disk quota is exhausted; free space and rerun",
    errno.EFBIG: "the file has reached the size limit of this process or file system",
    errno.EROFS: "the file system is mounted read-only; point the setting at a writable place",
    errno.EACCES: "no permission; check the owner and mode of the path",
    errno.EPERM: "not permitted; check the owner and mode of the path",
}

_MLFLOW_CORRUPT = ("file is not a database", "database disk image is malformed", "malformed database schema")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _raised_in(chain: list[BaseException], folder: str) -> bool:
    """True when a frame of any exception in the chain is in a file under ``folder`` (a package)."""
    return any(folder in frame.filename for item in chain for frame in traceback.extract_tb(item.__traceback__))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _mlflow_store() -> str:
    uri = default_paths().mlflow_tracking_uri
    return uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else uri


def describe(exc: BaseException) -> str | None:
    """One line naming the path and the problem, or None when ``exc`` is not a known failure class."""
    from clinical_mlops.audit import ledger
    from clinical_mlops.core import warehouse

    chain = _chain(exc)
    text = " ".join(str(e) for e in chain).lower()
    for item in chain:
        if isinstance(item, warehouse.WarehouseBusyError | warehouse.LegacyWarehouseError):
            return str(item)
        if isinstance(item, ledger.LedgerError):
            return f"audit ledger: {item} (check it with `clinical-mlops audit verify`)"
    corrupt = next((marker for marker in _MLFLOW_CORRUPT if marker in text), None)
    if corrupt:
        return (f"the MLflow store {_mlflow_store()} cannot be read ({corrupt}); "
                "restore it from a backup or set MLFLOW_TRACKING_URI to a healthy store")
    if any(type(item).__module__.startswith("sqlalchemy") for item in chain):
        if _raised_in(chain, "/mlflow/"):
            return f"the MLflow store {_mlflow_store()}: {_first_line(chain[-1])}"
        if _raised_in(chain, "/dagster/"):
            return f"the Dagster instance storage under {os.environ.get('DAGSTER_HOME', '.')}: {_first_line(chain[-1])}"
    for item in chain:
        if isinstance(item, OSError) and item.errno in _OS_HINTS:
            where = item.filename or "a file"
            return f"{where}: {item.strerror or _first_line(item)}; {_OS_HINTS[item.errno]}"
    for item in chain:
        if isinstance(item, duckdb.Error):
            return describe_warehouse_error(item)
    return None


def describe_warehouse_error(exc: BaseException) -> str:
    """A DuckDB failure as one line naming the warehouse file and, for disk problems, what to do."""
    message = _first_line(exc)
    lowered = message.lower()
    hint = ""
    if "read-only file system" in lowered:
        hint = "; the file system is mounted read-only: point CLINICAL_MLOPS_WAREHOUSE at a writable place"
    elif "no space left" in lowered:
        hint = "; free space on that file system and rerun"
    elif "lock" in lowered:
        hint = "; another process is writing it: retry when it finishes"
    return f"the warehouse {default_paths().warehouse}: {message}{hint}"


IDENTIFIER_PHRASES: dict[str, str] = {
    "ssn": "SSN-like values", "email": "e-mail addresses", "phone": "phone numbers", "fax": "fax numbers",
    "name": "personal names", "full_date": "full dates", "zip5": "ZIP codes", "address": "street addresses",
    "url": "web URLs", "ip_address": "IP addresses", "mrn": "medical record numbers",
}
"""How a kind of identifier (``deid.IDENTIFIER_KINDS``) reads in an error line; others read ``<kind> identifiers``."""

GATE_CHECK = "raw_extract:no_direct_identifiers"
"""The identifier gate, as the tail of its check's name ("<source>/raw_extract:no_direct_identifiers")."""


def _finding_phrase(finding: Mapping) -> str:
    kind = str(finding.get("identifier", "identifier"))
    column = finding.get("column", "?")
    if finding.get("location") == "column_name":
        return f"column {column} is named like {IDENTIFIER_PHRASES.get(kind, kind.replace('_', ' ') + ' identifiers')}"
    what = IDENTIFIER_PHRASES.get(kind, f"{kind.replace('_', ' ')} identifiers")
    return f"column {column} holds {what} ({finding.get('rows', 0)} rows)"


def describe_identifier_refusal(metadata: Mapping) -> str | None:
    """``extract X refused by the identifier gate: column C holds SSN-like values (N rows); nothing landed``.

    Built from the gate check's metadata (column, kind of identifier, row count), never from values.
    """
    findings = metadata.get("findings_detail")
    if not findings:
        return None
    extract = metadata.get("extract_id") or "?"
    return (f"extract {extract} refused by the identifier gate: "
            f"{', '.join(_finding_phrase(f) for f in findings)}; nothing landed")


_DAGSTER_NAME = re.compile(r"\b(dagster\.)?(_core\.)?(errors\.)?Dagster[A-Za-z]*(Error|Exception)\b:?\s*")


def without_dagster_names(text: str) -> str:
    """``text`` with Dagster's error class names (``dagster._core.errors.Dagster…Error:``) taken out."""
    return re.sub(r"\bdagster\._core\.[\w.]*\s*", "", _DAGSTER_NAME.sub("", text)).strip().lstrip(":").strip()


def describe_failed_checks(check_metadata: Mapping[str, Mapping], blocking: list[str]) -> str | None:
    """One line for failed blocking checks: the identifier gate's refusal, or each check and its reason."""
    for gate in (name for name in blocking if name.endswith(GATE_CHECK)):
        if refusal := describe_identifier_refusal(check_metadata.get(gate, {})):
            return refusal
    parts = []
    for name in blocking:
        values = check_metadata.get(name, {})
        reason = values.get("evidence_reason") or values.get("description") or ""
        parts.append(f"{name} ({reason})" if reason else name)
    return f"blocking check failed: {'; '.join(parts)}" if parts else None


def run_error(outcome) -> str:
    """A failed run's error on one line, without Dagster's class names; DuckDB errors name the warehouse file.

    A failed blocking check is described from its metadata (the identifier gate: the column, the kind of
    identifier and the row count, never a value); any other error is its first line.
    """
    if outcome.blocking_failures:
        described = describe_failed_checks(getattr(outcome, "check_metadata", {}), outcome.blocking_failures)
        if described:
            return described
    first = (outcome.error or "the run failed").strip().partition("\n")[0]
    if outcome.error_class and outcome.error_class.endswith(("IOException", "PermissionException")):
        return describe_warehouse_error(RuntimeError(first))
    return without_dagster_names(first) or "the run failed"
