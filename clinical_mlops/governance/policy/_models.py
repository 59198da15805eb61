"""The whole policy: the file's top-level sections (:class:`PolicyDocument`) and, with its hash, :class:`Policy`.

The sections are in :mod:`._owner_models` (owners, escalation), :mod:`._fairness_models` (fairness) and
:mod:`._control_models` (drift, change control, monitoring); validation happens when they are built.
"""

from __future__ import annotations

from dataclasses import field

from clinical_mlops.governance.policy._control_models import ChangeControl, DriftPolicy, MonitoringPolicy
from clinical_mlops.governance.policy._fairness_models import FairnessPolicy
from clinical_mlops.governance.policy._fields import Label, closed_section, section
from clinical_mlops.governance.policy._owner_models import Escalation, Owners

__all__ = ["Policy", "PolicyDocument"]


@closed_section
class PolicyDocument:
    """The file's content: exactly the top-level sections, nothing else."""

    version: Label
    owners: Owners
    escalation: Escalation
    fairness: FairnessPolicy
    drift: DriftPolicy
    change_control: ChangeControl
    monitoring: MonitoringPolicy = field(default_factory=MonitoringPolicy)
    """Optional: the defaults above when the file has no ``monitoring:`` section."""


@section
class Policy(PolicyDocument):
    """The whole governance policy; :attr:`sha256` is the hash of the file's bytes."""

    sha256: str = field(kw_only=True)
    source: str = field(default="<string>", kw_only=True)

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    def owner_for(self, severity: str) -> str:
        """The owner role who must act on a finding of this severity."""
        return self.escalation.for_severity(severity).owner
