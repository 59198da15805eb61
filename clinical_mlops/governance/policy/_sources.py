"""The policy as it applies to one cohort: its thresholds, with the sensitive attributes (reference
groups, reference population, required groups, intersections) of the cohort's source contract."""

from __future__ import annotations

import dataclasses

from clinical_mlops.governance.policy._fairness_models import SensitiveAttribute
from clinical_mlops.governance.policy._models import Policy

__all__ = ["for_cohort"]


def for_cohort(policy: Policy, spec) -> Policy:
    """``policy`` with the sensitive attributes of ``spec``'s source contract (``spec.source``).

    The policy keeps thresholds, severities and owners; who the groups are and which must be assessed
    is the source's. A spec without a source keeps the policy's own attributes. Idempotent.
    """
    if not getattr(spec, "source", ""):
        return policy
    from clinical_mlops.sources.contract import load_source

    contract = load_source(spec.source).contract
    attributes = tuple(
        SensitiveAttribute(name=name, reference=a.reference, reference_population=dict(a.reference_population or {}),
                           required_groups=tuple(a.required_groups))
        for name, a in contract.sensitive_attributes.items()
    )
    fairness = dataclasses.replace(policy.fairness, sensitive_attributes=attributes,
                                   intersections=tuple(tuple(c) for c in contract.intersections))
    return dataclasses.replace(policy, fairness=fairness)
