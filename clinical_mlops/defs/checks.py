"""Asset-check results under the one evidence rule (:mod:`clinical_mlops.core.evidence`).

``passed`` is ``True`` only for ``pass``. Insufficient evidence is a failed check whose metadata
says ``evidence: insufficient_evidence`` and why, so the Dagster UI shows it red (ERROR for a
blocking rule, WARN otherwise) with the reason, never a green tick.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from clinical_mlops.core.evidence import INSUFFICIENT, Evidence, passed

__all__ = ["evidence_check", "severity_for"]


def severity_for(blocking: bool) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN


def evidence_check(
    check_name: str,
    evidence: Evidence,
    *,
    blocking: bool,
    metadata: Mapping[str, Any] | None = None,
    description: str | None = None,
    asset_key: dg.AssetKey | None = None,
) -> dg.AssetCheckResult:
    """One check's result: passed only on ``pass``; the status and reason are always in the metadata."""
    text = description or evidence.reason
    if evidence.status == INSUFFICIENT:
        text = f"insufficient evidence: {text}"
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=passed(evidence.status),
        severity=severity_for(blocking),
        asset_key=asset_key,
        description=text,
        metadata={"evidence": evidence.status, "evidence_reason": evidence.reason, **dict(metadata or {})},
    )
