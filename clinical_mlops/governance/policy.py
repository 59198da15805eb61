"""The governance policy (``governance/policy.yaml``) as typed, validated, hashed configuration.

One file states the fairness thresholds, drift limits, change-control rules, owners and
escalation timelines. Fairness gates, drift checks, promotion decisions, incident records and the
generated governance document all read it through :func:`load_policy`, and every decision that
uses it records :attr:`Policy.sha256`, so a verdict can always be traced to the exact rules that
produced it.

Validation happens on load: a malformed file raises :class:`PolicyError` whose message names the
file and the field at fault (``governance/policy.yaml: fairness.metrics.recall_gap.max_difference
must be a number in (0, 1]``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clinical_mlops.core.settings import PROJECT_ROOT

DEFAULT_POLICY_PATH = Path(os.environ.get("CLINICAL_MLOPS_POLICY", PROJECT_ROOT / "governance" / "policy.yaml"))

SEVERITIES: tuple[str, ...] = ("warn", "block_promotion", "open_incident")
"""Severities in increasing order of consequence."""

BLOCKING_SEVERITIES: frozenset[str] = frozenset({"block_promotion", "open_incident"})
OWNER_ROLES: tuple[str, ...] = ("model_owner", "clinical_lead", "data_protection", "governance_board")
CORRECTIONS: tuple[str, ...] = ("holm", "benjamini_hochberg", "bonferroni", "none")

# Fairness metrics the code knows how to compute, and the kind of bound each takes.
DIFFERENCE_METRICS: frozenset[str] = frozenset(
    {
        "recall_gap",
        "fpr_gap",
        "precision_gap",
        "auroc_gap",
        "equalized_odds_difference",
        "demographic_parity_difference",
        "calibration_gap",
    }
)
RATIO_METRICS: frozenset[str] = frozenset({"demographic_parity_ratio", "recall_ratio"})
KNOWN_METRICS: frozenset[str] = DIFFERENCE_METRICS | RATIO_METRICS
MITIGATION_METHODS: frozenset[str] = frozenset({"group_thresholds", "threshold_optimizer", "exponentiated_gradient"})
MITIGATION_CONSTRAINTS: frozenset[str] = frozenset(
    {"true_positive_rate_parity", "equalized_odds", "demographic_parity", "false_positive_rate_parity"}
)


class PolicyError(ValueError):
    """The policy file is malformed; the message names the file and the field at fault."""


# --------------------------------------------------------------------------------------------
# Typed sections
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Owners:
    """Who is accountable for what; escalation rules refer to these roles by name."""

    model_owner: str
    clinical_lead: str
    data_protection: str
    governance_board: str

    def contact(self, role: str) -> str:
        if role not in OWNER_ROLES:
            raise KeyError(f"unknown owner role '{role}'")
        return str(getattr(self, role))

    def as_dict(self) -> dict[str, str]:
        return {role: self.contact(role) for role in OWNER_ROLES}


@dataclass(frozen=True)
class EscalationRule:
    """What happens at one severity: who is told, within how many hours, by which channel, to do what."""

    severity: str
    notify: tuple[str, ...]
    within_hours: float
    action: str
    channel: str = ""

    @property
    def owner(self) -> str:
        """The role that owns the response (the first one notified)."""
        return self.notify[0]


@dataclass(frozen=True)
class Escalation:
    warn: EscalationRule
    block_promotion: EscalationRule
    open_incident: EscalationRule

    def for_severity(self, severity: str) -> EscalationRule:
        if severity not in SEVERITIES:
            raise KeyError(f"unknown severity '{severity}' (expected one of {', '.join(SEVERITIES)})")
        return getattr(self, severity)

    @property
    def rules(self) -> tuple[EscalationRule, ...]:
        return tuple(self.for_severity(s) for s in SEVERITIES)


@dataclass(frozen=True)
class SensitiveAttribute:
    """A protected attribute, its reference group, and optionally the population it should mirror."""

    name: str
    reference: str
    reference_population: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricRule:
    """One fairness metric with its bound and the severity of breaching it.

    ``max_difference`` bounds an absolute gap (|group - reference|); ``min_ratio`` bounds a ratio
    (min(group/reference, reference/group)). Exactly one of the two is set.
    """

    name: str
    severity: str
    max_difference: float | None = None
    min_ratio: float | None = None
    direction: str = "both"
    """``both``: a gap either way breaches; ``lower``: only a group doing worse than the
    reference breaches (e.g. lower recall is harm, higher recall is not)."""

    @property
    def kind(self) -> str:
        return "ratio" if self.min_ratio is not None else "difference"

    @property
    def bound(self) -> float:
        return float(self.min_ratio if self.min_ratio is not None else self.max_difference)  # type: ignore[arg-type]

    @property
    def blocking(self) -> bool:
        return self.severity in BLOCKING_SEVERITIES

    @property
    def check_name(self) -> str:
        """The asset check that enforces this rule, e.g. ``recall_gap_within_policy``."""
        return f"{self.name}_within_policy"

    def describe(self) -> str:
        if self.kind == "ratio":
            return f"ratio to reference >= {self.bound:g}"
        return f"abs(difference from reference) <= {self.bound:g}"


@dataclass(frozen=True)
class Significance:
    test: str = "two_proportion_z"
    correction: str = "holm"
    alpha: float = 0.05


@dataclass(frozen=True)
class MitigationPolicy:
    methods: tuple[str, ...] = ("group_thresholds", "threshold_optimizer", "exponentiated_gradient")
    constraint: str = "true_positive_rate_parity"


@dataclass(frozen=True)
class FairnessPolicy:
    min_group_size: int
    confidence: float
    n_bootstrap: int
    sensitive_attributes: tuple[SensitiveAttribute, ...]
    intersections: tuple[tuple[str, ...], ...]
    metrics: tuple[MetricRule, ...]
    bootstrap_seed: int = 0
    significance: Significance = field(default_factory=Significance)
    mitigation: MitigationPolicy = field(default_factory=MitigationPolicy)

    def attribute(self, name: str) -> SensitiveAttribute:
        for attr in self.sensitive_attributes:
            if attr.name == name:
                return attr
        raise KeyError(f"no sensitive attribute '{name}' in the policy")

    def metric(self, name: str) -> MetricRule:
        for rule in self.metrics:
            if rule.name == name:
                return rule
        raise KeyError(f"no fairness metric '{name}' in the policy")

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.sensitive_attributes)

    @property
    def blocking_metrics(self) -> tuple[MetricRule, ...]:
        return tuple(m for m in self.metrics if m.blocking)


@dataclass(frozen=True)
class DriftPolicy:
    alpha: float
    correction: str
    dataset_drift_share: float
    psi_threshold: float
    severity: str
    evidently_sample_rows: int
    evidently_sample_seed: int

    @property
    def blocking(self) -> bool:
        return self.severity in BLOCKING_SEVERITIES


@dataclass(frozen=True)
class Acceptance:
    max_auroc_drop: float
    no_new_fairness_failures: bool


@dataclass(frozen=True)
class AbsoluteAcceptance:
    min_auroc: float
    max_brier: float


@dataclass(frozen=True)
class ChangeControl:
    allowed_modifications: tuple[str, ...]
    requires_new_review: tuple[str, ...]
    acceptance: Acceptance
    absolute_acceptance: AbsoluteAcceptance


@dataclass(frozen=True)
class Policy:
    """The whole governance policy; :attr:`sha256` is the hash of the file's bytes."""

    version: str
    owners: Owners
    escalation: Escalation
    fairness: FairnessPolicy
    drift: DriftPolicy
    change_control: ChangeControl
    sha256: str
    source: str = "<string>"

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    def owner_for(self, severity: str) -> str:
        """The owner role who must act on a finding of this severity."""
        return self.escalation.for_severity(severity).owner


# --------------------------------------------------------------------------------------------
# Parsing and validation
# --------------------------------------------------------------------------------------------


class _Reader:
    """Reads typed fields from nested mappings, raising PolicyError with the dotted field path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> PolicyError:
        return PolicyError(f"{self.source}: {where} {message}")

    def mapping(self, raw: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(raw, Mapping):
            raise self.fail(where, f"must be a mapping, got {type(raw).__name__}")
        return raw

    def get(self, raw: Mapping[str, Any], key: str, where: str) -> Any:
        if key not in raw or raw[key] is None:
            raise self.fail(f"{where}.{key}" if where else key, "is required but missing")
        return raw[key]

    def string(self, raw: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
        if default is not None and (key not in raw or raw[key] is None):
            return default
        value = self.get(raw, key, where)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(self._path(where, key), "must be a non-empty string")
        return value.strip()

    def number(
        self,
        raw: Mapping[str, Any],
        key: str,
        where: str,
        *,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
        default: float | None = None,
    ) -> float:
        if default is not None and (key not in raw or raw[key] is None):
            return default
        value = self.get(raw, key, where)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(self._path(where, key), f"must be a number, got {value!r}")
        value = float(value)
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high):
            left = "(" if low_open else "["
            raise self.fail(self._path(where, key), f"must be a number in {left}{low}, {high}], got {value:g}")
        return value

    def integer(
        self, raw: Mapping[str, Any], key: str, where: str, *, low: int = 0, default: int | None = None
    ) -> int:
        if default is not None and (key not in raw or raw[key] is None):
            return default
        value = self.get(raw, key, where)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.fail(self._path(where, key), f"must be an integer >= {low}, got {value!r}")
        return int(value)

    def boolean(self, raw: Mapping[str, Any], key: str, where: str) -> bool:
        value = self.get(raw, key, where)
        if not isinstance(value, bool):
            raise self.fail(self._path(where, key), f"must be true or false, got {value!r}")
        return value

    def strings(self, raw: Mapping[str, Any], key: str, where: str, *, allow_empty: bool = True) -> tuple[str, ...]:
        value = self.get(raw, key, where)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(self._path(where, key), "must be a list of strings")
        if not allow_empty and not value:
            raise self.fail(self._path(where, key), "must not be empty")
        return tuple(value)

    def choice(self, raw: Mapping[str, Any], key: str, where: str, options: tuple[str, ...] | frozenset[str], default: str | None = None) -> str:
        value = self.string(raw, key, where, default=default)
        if value not in options:
            raise self.fail(self._path(where, key), f"'{value}' is not one of {', '.join(sorted(options))}")
        return value

    @staticmethod
    def _path(where: str, key: str) -> str:
        return f"{where}.{key}" if where else key


def _parse_owners(r: _Reader, raw: Mapping[str, Any]) -> Owners:
    section = r.mapping(r.get(raw, "owners", ""), "owners")
    return Owners(**{role: r.string(section, role, "owners") for role in OWNER_ROLES})


def _parse_escalation(r: _Reader, raw: Mapping[str, Any]) -> Escalation:
    section = r.mapping(r.get(raw, "escalation", ""), "escalation")
    unknown = set(section) - set(SEVERITIES)
    if unknown:
        raise r.fail("escalation", f"has unknown severities {sorted(unknown)} (expected {', '.join(SEVERITIES)})")
    rules = {}
    for severity in SEVERITIES:
        where = f"escalation.{severity}"
        rule = r.mapping(r.get(section, severity, "escalation"), where)
        notify = r.strings(rule, "notify", where, allow_empty=False)
        for role in notify:
            if role not in OWNER_ROLES:
                raise r.fail(f"{where}.notify", f"names unknown owner role '{role}' (expected one of {', '.join(OWNER_ROLES)})")
        rules[severity] = EscalationRule(
            severity=severity,
            notify=notify,
            within_hours=r.number(rule, "within_hours", where, low=0, low_open=True, high=24 * 365),
            action=r.string(rule, "action", where),
            channel=r.string(rule, "channel", where, default=""),
        )
    return Escalation(**rules)


def _parse_metric(r: _Reader, name: str, raw: Any) -> MetricRule:
    where = f"fairness.metrics.{name}"
    if name not in KNOWN_METRICS:
        raise r.fail(where, f"is not a known fairness metric (expected one of {', '.join(sorted(KNOWN_METRICS))})")
    rule = r.mapping(raw, where)
    severity = r.choice(rule, "severity", where, SEVERITIES)
    if name in RATIO_METRICS:
        if "max_difference" in rule:
            raise r.fail(where, "is a ratio metric: give min_ratio, not max_difference")
        return MetricRule(name=name, severity=severity, min_ratio=r.number(rule, "min_ratio", where, low=0, high=1, low_open=True))
    if "min_ratio" in rule:
        raise r.fail(where, "is a difference metric: give max_difference, not min_ratio")
    direction = r.choice(rule, "direction", where, ("both", "lower")) if "direction" in rule else "both"
    return MetricRule(
        name=name, severity=severity, direction=direction,
        max_difference=r.number(rule, "max_difference", where, low=0, high=1, low_open=True),
    )


def _parse_fairness(r: _Reader, raw: Mapping[str, Any]) -> FairnessPolicy:
    section = r.mapping(r.get(raw, "fairness", ""), "fairness")
    attrs_raw = r.mapping(r.get(section, "sensitive_attributes", "fairness"), "fairness.sensitive_attributes")
    if not attrs_raw:
        raise r.fail("fairness.sensitive_attributes", "must name at least one attribute")
    attributes = []
    for name, spec in attrs_raw.items():
        where = f"fairness.sensitive_attributes.{name}"
        spec = r.mapping(spec, where)
        reference = spec.get("reference")
        if reference is None or str(reference).strip() == "":
            raise r.fail(f"{where}.reference", "is required but missing")
        population_raw = spec.get("reference_population") or {}
        population = r.mapping(population_raw, f"{where}.reference_population")
        shares: dict[str, float] = {}
        for group, share in population.items():
            shares[str(group)] = r.number(population, group, f"{where}.reference_population", low=0, high=1)
        if shares:
            total = sum(shares.values())
            if not 0.95 <= total <= 1.05:
                raise r.fail(f"{where}.reference_population", f"shares must sum to 1 (within 0.05), got {total:.3f}")
            if str(reference) not in shares:
                raise r.fail(f"{where}.reference_population", f"must include the reference group '{reference}'")
        attributes.append(SensitiveAttribute(name=str(name), reference=str(reference), reference_population=shares))
    names = {a.name for a in attributes}

    intersections_raw = section.get("intersections") or []
    if not isinstance(intersections_raw, list):
        raise r.fail("fairness.intersections", "must be a list of attribute lists")
    intersections = []
    for i, combo in enumerate(intersections_raw):
        where = f"fairness.intersections[{i}]"
        if not isinstance(combo, list) or len(combo) < 2 or not all(isinstance(c, str) for c in combo):
            raise r.fail(where, "must be a list of at least two attribute names")
        missing = [c for c in combo if c not in names]
        if missing:
            raise r.fail(where, f"names attributes not declared in fairness.sensitive_attributes: {missing}")
        intersections.append(tuple(combo))

    metrics_raw = r.mapping(r.get(section, "metrics", "fairness"), "fairness.metrics")
    if not metrics_raw:
        raise r.fail("fairness.metrics", "must declare at least one metric")
    metrics = tuple(_parse_metric(r, str(name), spec) for name, spec in metrics_raw.items())

    sig_raw = r.mapping(section.get("significance") or {}, "fairness.significance")
    significance = Significance(
        test=r.choice(sig_raw, "test", "fairness.significance", ("two_proportion_z",), default="two_proportion_z"),
        correction=r.choice(sig_raw, "correction", "fairness.significance", CORRECTIONS, default="holm"),
        alpha=r.number(sig_raw, "alpha", "fairness.significance", low=0, high=0.5, low_open=True, default=0.05),
    )
    mit_raw = r.mapping(section.get("mitigation") or {}, "fairness.mitigation")
    methods = r.strings(mit_raw, "methods", "fairness.mitigation") if "methods" in mit_raw else MitigationPolicy().methods
    for method in methods:
        if method not in MITIGATION_METHODS:
            raise r.fail("fairness.mitigation.methods", f"'{method}' is not one of {', '.join(sorted(MITIGATION_METHODS))}")
    mitigation = MitigationPolicy(
        methods=methods,
        constraint=r.choice(mit_raw, "constraint", "fairness.mitigation", MITIGATION_CONSTRAINTS, default=MitigationPolicy().constraint),
    )
    return FairnessPolicy(
        min_group_size=r.integer(section, "min_group_size", "fairness", low=1),
        confidence=r.number(section, "confidence", "fairness", low=0.5, high=0.999),
        n_bootstrap=r.integer(section, "n_bootstrap", "fairness", low=20),
        sensitive_attributes=tuple(attributes),
        intersections=tuple(intersections),
        metrics=metrics,
        bootstrap_seed=r.integer(section, "bootstrap_seed", "fairness", low=0, default=0),
        significance=significance,
        mitigation=mitigation,
    )


def _parse_drift(r: _Reader, raw: Mapping[str, Any]) -> DriftPolicy:
    section = r.mapping(r.get(raw, "drift", ""), "drift")
    return DriftPolicy(
        alpha=r.number(section, "alpha", "drift", low=0, high=0.5, low_open=True),
        correction=r.choice(section, "correction", "drift", CORRECTIONS),
        dataset_drift_share=r.number(section, "dataset_drift_share", "drift", low=0, high=1, low_open=True),
        psi_threshold=r.number(section, "psi_threshold", "drift", low=0, high=10, low_open=True),
        severity=r.choice(section, "severity", "drift", SEVERITIES),
        evidently_sample_rows=r.integer(section, "evidently_sample_rows", "drift", low=100),
        evidently_sample_seed=r.integer(section, "evidently_sample_seed", "drift", low=0),
    )


def _parse_change_control(r: _Reader, raw: Mapping[str, Any]) -> ChangeControl:
    section = r.mapping(r.get(raw, "change_control", ""), "change_control")
    acc = r.mapping(r.get(section, "acceptance", "change_control"), "change_control.acceptance")
    absolute = r.mapping(r.get(section, "absolute_acceptance", "change_control"), "change_control.absolute_acceptance")
    allowed = r.strings(section, "allowed_modifications", "change_control")
    review = r.strings(section, "requires_new_review", "change_control")
    both = set(allowed) & set(review)
    if both:
        raise r.fail("change_control", f"lists modifications as both allowed and requiring review: {sorted(both)}")
    return ChangeControl(
        allowed_modifications=allowed,
        requires_new_review=review,
        acceptance=Acceptance(
            max_auroc_drop=r.number(acc, "max_auroc_drop", "change_control.acceptance", low=0, high=1),
            no_new_fairness_failures=r.boolean(acc, "no_new_fairness_failures", "change_control.acceptance"),
        ),
        absolute_acceptance=AbsoluteAcceptance(
            min_auroc=r.number(absolute, "min_auroc", "change_control.absolute_acceptance", low=0, high=1),
            max_brier=r.number(absolute, "max_brier", "change_control.absolute_acceptance", low=0, high=1, low_open=True),
        ),
    )


_TOP_LEVEL = ("version", "owners", "escalation", "fairness", "drift", "change_control")


def parse_policy(text: str | bytes, source: str = "<string>") -> Policy:
    """Parse and validate policy YAML; the hash is taken over the exact bytes given."""
    data = text.encode() if isinstance(text, str) else text
    r = _Reader(source)
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{source}: expected a mapping at the top level")
    unknown = set(raw) - set(_TOP_LEVEL)
    if unknown:
        raise PolicyError(f"{source}: unknown top-level sections {sorted(unknown)} (expected {', '.join(_TOP_LEVEL)})")
    version = raw.get("version")
    if version is None or str(version).strip() == "":
        raise PolicyError(f"{source}: version is required but missing")
    return Policy(
        version=str(version),
        owners=_parse_owners(r, raw),
        escalation=_parse_escalation(r, raw),
        fairness=_parse_fairness(r, raw),
        drift=_parse_drift(r, raw),
        change_control=_parse_change_control(r, raw),
        sha256=hashlib.sha256(data).hexdigest(),
        source=source,
    )


def load_policy(path: Path = DEFAULT_POLICY_PATH) -> Policy:
    """Read and validate the policy file; raise :class:`PolicyError` naming the field at fault."""
    path = Path(path)
    if not path.exists():
        raise PolicyError(f"{path}: policy file not found")
    try:
        source = str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        source = str(path)
    return parse_policy(path.read_bytes(), source=source)
