"""The governance policy (``governance/policy.yaml``) as typed, validated, hashed configuration.

One file states the fairness thresholds, drift limits, change-control rules, owners and
escalation timelines. Fairness gates, drift checks, promotion decisions, incident records and the
generated governance document all read it through :func:`load_policy` — one cached object per
file for the process, re-read when the file's bytes change — and every decision that uses it
records :attr:`Policy.sha256`, so a verdict can always be traced to the exact rules that
produced it.

The sections are frozen pydantic dataclasses (:mod:`._models`: the whole policy; :mod:`._owner_models`,
:mod:`._fairness_models`, :mod:`._control_models`: its sections); their field types are in :mod:`._fields`
and :mod:`._value_types`, the words a policy may use in :mod:`._vocabulary`, reading and caching in
:mod:`._load`. Validation happens on load: a malformed file raises :class:`PolicyError`, whose
one-line message names the file and the field at fault (``governance/policy.yaml:
fairness.metrics.recall_gap.max_difference must be a number in (0, 1], got 1.5``).
"""

from clinical_mlops.governance.policy._load import (
    POLICY_ENV,
    SHIPPED_POLICY_PATH,
    PolicyError,
    default_policy_path,
    load_policy,
    parse_policy,
)
from clinical_mlops.governance.policy._sources import for_cohort
from clinical_mlops.governance.policy._control_models import (
    DEFAULT_NON_INFERIORITY_MARGIN,
    AbsoluteAcceptance,
    Acceptance,
    ChangeControl,
    DriftPolicy,
    MonitoringPolicy,
)
from clinical_mlops.governance.policy._fairness_models import (
    FairnessPolicy,
    MetricRule,
    MitigationPolicy,
    SensitiveAttribute,
    Significance,
)
from clinical_mlops.governance.policy._models import Policy, PolicyDocument
from clinical_mlops.governance.policy._owner_models import Escalation, EscalationRule, Owners
from clinical_mlops.governance.policy._vocabulary import (
    BLOCKING_SEVERITIES,
    CORRECTIONS,
    DIFFERENCE_METRICS,
    KNOWN_METRICS,
    MITIGATION_CONSTRAINTS,
    MITIGATION_METHODS,
    OWNER_ROLES,
    RATIO_METRICS,
    SEVERITIES,
    TOP_LEVEL_SECTIONS,
)

__all__ = [
    "BLOCKING_SEVERITIES",
    "CORRECTIONS",
    "DEFAULT_NON_INFERIORITY_MARGIN",
    "for_cohort",
    "POLICY_ENV",
    "SHIPPED_POLICY_PATH",
    "DIFFERENCE_METRICS",
    "KNOWN_METRICS",
    "MITIGATION_CONSTRAINTS",
    "MITIGATION_METHODS",
    "OWNER_ROLES",
    "RATIO_METRICS",
    "SEVERITIES",
    "TOP_LEVEL_SECTIONS",
    "AbsoluteAcceptance",
    "Acceptance",
    "ChangeControl",
    "DriftPolicy",
    "Escalation",
    "EscalationRule",
    "FairnessPolicy",
    "MetricRule",
    "MitigationPolicy",
    "MonitoringPolicy",
    "Owners",
    "Policy",
    "PolicyDocument",
    "PolicyError",
    "SensitiveAttribute",
    "Significance",
    "default_policy_path",
    "load_policy",
    "parse_policy",
]
