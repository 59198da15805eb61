"""The ``fairness`` section: sensitive attributes, metric bounds, significance and mitigation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, field_validator, model_validator

from clinical_mlops.governance.policy._fields import Label, Names, arguments, fail, members, section
from clinical_mlops.governance.policy._value_types import (
    Alpha,
    AtLeast20,
    AtLeastOne,
    Bound,
    Confidence,
    Constraint,
    Correction,
    Direction,
    Fraction,
    Seed,
    Severity,
    Share,
    SignificanceTest,
)
from clinical_mlops.governance.policy._vocabulary import (
    BLOCKING_SEVERITIES,
    KNOWN_METRICS,
    MITIGATION_METHODS,
    OWNER_ROLES,
    RATIO_METRICS,
)

__all__ = ["FairnessPolicy", "MetricRule", "MitigationPolicy", "SensitiveAttribute", "Significance"]


def _group_labels(value: Any) -> Any:
    """Group names as text (YAML may read a group such as ``1`` as a number)."""
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list) and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        return [str(v) for v in value]
    return value


GroupNames = Annotated[Names, BeforeValidator(_group_labels)]


@section
class SensitiveAttribute:
    """A protected attribute, its reference group, and optionally the population it should mirror.

    ``required_groups`` must be assessed: a required group without sufficient evidence blocks the
    rule (insufficient evidence), whereas any other group without evidence is only listed as
    "not assessable". The reference group is never assessed against itself, so it cannot be required.
    """

    name: str
    reference: Label
    reference_population: dict[str, Fraction] = field(default_factory=dict)
    required_groups: GroupNames = ()

    @field_validator("reference_population", mode="before")
    @classmethod
    def _group_names_as_text(cls, value: Any) -> Any:
        return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else value

    @model_validator(mode="after")
    def _required_groups_are_not_the_reference(self) -> SensitiveAttribute:
        if self.reference in self.required_groups:
            raise fail(f"must not name the reference group '{self.reference}' (it is never assessed against itself)",
                       at=("required_groups",))
        if len(set(self.required_groups)) != len(self.required_groups):
            raise fail("lists a group twice", at=("required_groups",))
        return self

    @model_validator(mode="after")
    def _shares_describe_a_population(self) -> SensitiveAttribute:
        shares = self.reference_population
        if shares:
            total = sum(shares.values())
            if not 0.95 <= total <= 1.05:
                raise fail(f"shares must sum to 1 (within 0.05), got {total:.3f}", at=("reference_population",))
            if self.reference not in shares:
                raise fail(f"must include the reference group '{self.reference}'", at=("reference_population",))
        return self


@section
class MetricRule:
    """One fairness metric with its bound and the severity of breaching it.

    ``max_difference`` bounds an absolute gap (|group - reference|); ``min_ratio`` bounds a ratio
    (min(group/reference, reference/group)). Exactly one of the two is set, the one of the
    metric's kind.
    """

    name: str
    severity: Severity
    max_difference: Bound = None
    min_ratio: Bound = None
    direction: Direction = "both"
    """``both``: a gap either way breaches; ``lower``: only a group doing worse than the
    reference breaches (e.g. lower recall is harm, higher recall is not)."""

    @model_validator(mode="before")
    @classmethod
    def _one_bound_of_the_metric_kind(cls, data: Any) -> Any:
        given = arguments(cls, data)
        if given is None:
            return data
        if given.get("name") not in KNOWN_METRICS:
            raise fail(f"is not a known fairness metric (expected one of {', '.join(sorted(KNOWN_METRICS))})")
        ratio = given["name"] in RATIO_METRICS
        bound, other = ("min_ratio", "max_difference") if ratio else ("max_difference", "min_ratio")
        if given.get(other) is not None:
            raise fail(f"is a {'ratio' if ratio else 'difference'} metric: give {bound}, not {other}")
        if given.get(bound) is None:
            raise fail("is required but missing", at=(bound,))
        return {**given, "direction": "both"} if ratio else given  # a ratio has no direction

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


def _listed_by_name(key: str, specs: Any) -> Any:
    """The file's ``{name: spec}`` as a list of specs that carry their name (built sections as they are)."""
    if isinstance(specs, Mapping):
        return [{**v, "name": str(k)} if isinstance(v, Mapping) else v for k, v in specs.items()]
    if isinstance(specs, (list, tuple)) and all(isinstance(s, (SensitiveAttribute, MetricRule)) for s in specs):
        return specs
    raise fail(f"must be a mapping, got {type(specs).__name__}", at=(key,))


@section
class Significance:
    test: SignificanceTest = "two_proportion_z"
    correction: Correction = "holm"
    alpha: Alpha = 0.05


@section
class MitigationPolicy:
    methods: Annotated[Names, AfterValidator(members(MITIGATION_METHODS))] = (
        "group_thresholds", "threshold_optimizer", "exponentiated_gradient")
    constraint: Constraint = "true_positive_rate_parity"


def _intersection(value: Any) -> Any:
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(c, str) for c in value):
        raise fail("must be a list of at least two attribute names")
    return tuple(value)


def _intersections(value: Any) -> Any:
    if not isinstance(value, (list, tuple)):
        raise fail("must be a list of attribute lists")
    return value


Intersections = Annotated[
    tuple[Annotated[tuple[str, ...], BeforeValidator(_intersection)], ...], BeforeValidator(_intersections)
]


@section
class FairnessPolicy:
    """Fairness gates: attributes and their reference groups, metric bounds, statistics, mitigation.

    In the file ``sensitive_attributes`` and ``metrics`` are mappings keyed by name; here they are
    tuples in file order, each item carrying its name; ``intersections`` may be left out.
    """

    min_group_size: AtLeastOne
    confidence: Confidence
    n_bootstrap: AtLeast20
    metrics: tuple[MetricRule, ...]
    sensitive_attributes: tuple[SensitiveAttribute, ...] = ()
    """From the source contract of the cohort audited (:func:`~clinical_mlops.governance.policy.for_cohort`);
    a policy file may still declare them, for a cohort without a source."""
    intersections: Intersections = ()
    bootstrap_seed: Seed = 0
    significance: Significance = field(default_factory=Significance)
    mitigation: MitigationPolicy = field(default_factory=MitigationPolicy)
    required_population_share: Share = None
    """Every group of a sensitive attribute whose share of the audited rows is at least this must be
    assessed (as if listed in ``required_groups``); ``None``: only the listed groups. Intersections
    are required by neither: their groups are "not assessable" when they lack evidence."""
    not_assessable_acknowledged_by: str | None = None
    """An owner role (``governance_board`` …) whose standing acknowledgement, in this reviewed and hashed
    policy, covers the groups that are not required and lack evidence: each decision still lists them
    and names the role. ``None``: each promotion needs a waiver for them."""

    @field_validator("not_assessable_acknowledged_by")
    @classmethod
    def _an_owner_role(cls, value: str | None) -> str | None:
        if value is not None and value not in OWNER_ROLES:
            raise ValueError(f"must be one of the owner roles {', '.join(OWNER_ROLES)}, got {value!r}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _specs_keyed_by_name(cls, data: Any) -> Any:
        given = arguments(cls, data)
        if given is None:
            return data
        named = {k: _listed_by_name(k, given[k]) for k in ("sensitive_attributes", "metrics") if k in given}
        return {"intersections": (), **given, **named}

    @field_validator("metrics")
    @classmethod
    def _some_metric(cls, value: tuple[MetricRule, ...]) -> tuple[MetricRule, ...]:
        if not value:
            raise fail("must declare at least one metric")
        return value

    @model_validator(mode="after")
    def _intersections_of_declared_attributes(self) -> FairnessPolicy:
        for i, combo in enumerate(self.intersections):
            missing = [c for c in combo if c not in self.attribute_names]
            if missing:
                raise fail(f"names attributes not declared in fairness.sensitive_attributes: {missing}",
                           at=("intersections", i))
        return self

    def required_groups(self, attribute: str, shares: Mapping[str, float] | None = None) -> frozenset[str]:
        """The groups of ``attribute`` that must be assessed: those listed, and those whose share of the
        audited rows (``shares``: group -> share) reaches :attr:`required_population_share`."""
        attr = self.attribute(attribute)
        required = set(attr.required_groups)
        if self.required_population_share is not None and shares:
            required |= {str(g) for g, s in shares.items() if s >= self.required_population_share}
        required.discard(attr.reference)
        return frozenset(required)

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
