"""What every asset's step shares: its error, its log, where its reports go, the escalation it cites.

A step is the plain function behind one asset (``clinical_mlops.<domain>.steps``): it takes a
warehouse connection and settings, does the asset's work and returns a small dataclass the asset
turns into metadata. Steps never import Dagster, so ``clinical-mlops bench`` runs exactly the
product's code path. A step that cannot run raises :class:`StepError`; the asset layer raises it
as a ``dagster.Failure`` with the same description, metadata and retry policy.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # annotations only: governance imports core, never the other way at run time
    from clinical_mlops.governance.policy import Policy

__all__ = ["LOG", "StepError", "StepLog", "escalation", "report_path"]

LOG = logging.getLogger("clinical_mlops.steps")
"""Where a step logs when its caller gives no log (the benchmark); assets pass ``context.log``."""


class StepLog(Protocol):
    """The part of a logger a step uses (``logging.Logger`` and Dagster's ``context.log`` both fit)."""

    def info(self, msg: str) -> Any: ...

    def warning(self, msg: str) -> Any: ...


class StepError(Exception):
    """The step cannot run as asked (nothing to work on, a refused input); the message says why."""

    def __init__(self, description: str, *, allow_retries: bool | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.allow_retries = allow_retries
        """``False``: retrying cannot help (a refused file); ``None``: the run's retry policy decides."""
        self.metadata = dict(metadata or {})


def report_path(reports_dir: Path | str, *parts: str) -> Path:
    """``reports_dir/part/…``, its folder created: where a step writes a report or a plot."""
    target = Path(reports_dir).joinpath(*parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def escalation(policy: Policy, severity: str) -> dict[str, Any]:
    """The policy's escalation rule for ``severity``: who is notified, within how long, to do what."""
    rule = policy.escalation.for_severity(severity)
    return {"severity": rule.severity, "notify": [policy.owners.contact(r) for r in rule.notify],
            "within_hours": rule.within_hours, "action": rule.action}
