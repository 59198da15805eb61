"""The ``owners`` and ``escalation`` sections: who is accountable, and who acts on a finding of each severity."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, model_validator

from clinical_mlops.governance.policy._fields import NonEmptyNames, Text, arguments, closed_section, members, section
from clinical_mlops.governance.policy._value_types import Hours
from clinical_mlops.governance.policy._vocabulary import OWNER_ROLES, SEVERITIES

__all__ = ["Escalation", "EscalationRule", "Owners"]


@section
class Owners:
    """Who is accountable for what; escalation rules refer to these roles by name."""

    model_owner: Text
    clinical_lead: Text
    data_protection: Text
    governance_board: Text

    def contact(self, role: str) -> str:
        if role not in OWNER_ROLES:
            raise KeyError(f"unknown owner role '{role}'")
        return str(getattr(self, role))

    def as_dict(self) -> dict[str, str]:
        return {role: self.contact(role) for role in OWNER_ROLES}


@section
class EscalationRule:
    """What happens at one severity: who is told, within how many hours, by which channel, to do what."""

    severity: str
    notify: Annotated[NonEmptyNames, AfterValidator(members(OWNER_ROLES, what="owner role"))]
    within_hours: Hours
    action: Text
    channel: Text = ""

    @property
    def owner(self) -> str:
        """The role that owns the response (the first one notified)."""
        return self.notify[0]


@closed_section
class Escalation:
    """One rule per severity, each keyed by its severity; no other key is allowed."""

    warn: EscalationRule
    block_promotion: EscalationRule
    open_incident: EscalationRule

    @model_validator(mode="before")
    @classmethod
    def _tell_rules_their_severity(cls, data: Any) -> Any:
        given = arguments(cls, data)
        if given is None:
            return data
        return {k: {**v, "severity": k} if isinstance(v, Mapping) else v for k, v in given.items()}

    def for_severity(self, severity: str) -> EscalationRule:
        if severity not in SEVERITIES:
            raise KeyError(f"unknown severity '{severity}' (expected one of {', '.join(SEVERITIES)})")
        return getattr(self, severity)

    @property
    def rules(self) -> tuple[EscalationRule, ...]:
        return tuple(self.for_severity(s) for s in SEVERITIES)
