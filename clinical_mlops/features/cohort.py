"""Cohort specifications: what a use case predicts, for whom, and from which features.

A cohort is configuration (a YAML file under ``clinical_mlops/cohorts/``) plus the shared
feature SQL; a second use case is a new spec, not new plumbing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["COHORTS_DIR", "MOMENTS", "CohortSpec", "CohortSpecError", "Exclusion", "PredictionTime", "load_all_cohorts",
    "load_cohort", "parse_cohort_spec"]

COHORTS_DIR = Path(__file__).parent / "cohorts"
_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
MOMENTS: tuple[str, ...] = ("admission", "during_stay", "discharge")
"""The moments of an encounter, in order, at which a prediction is made or a feature's value is complete."""


class CohortSpecError(ValueError):
    """A cohort specification is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Exclusion:
    name: str
    sql: str
    reason: str


@dataclass(frozen=True)
class PredictionTime:
    """When the prediction is made, and when each feature's value is complete — as the spec declares it."""

    at: str
    """One of :data:`MOMENTS`."""
    statement: str
    features_available_at: tuple[tuple[str, tuple[str, ...]], ...]
    """(moment, the features whose value is complete at that moment), declared features only, in spec order."""
    limitation: str = ""

    def available_at(self, feature: str) -> str | None:
        return next((m for m, names in self.features_available_at if feature in names), None)

    def late_features(self) -> tuple[str, ...]:
        """Declared features whose value is complete only after the prediction time."""
        cutoff = MOMENTS.index(self.at)
        return tuple(f for m, names in self.features_available_at if MOMENTS.index(m) > cutoff for f in names)


@dataclass(frozen=True)
class CohortSpec:
    """One use case: target, exclusions, features, sensitive attributes, split and threshold."""

    name: str
    title: str
    intended_use: str
    target_column: str
    target_sql: str
    target_definition: str
    target_source: str
    exclusions: tuple[Exclusion, ...]
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    sensitive_attributes: tuple[str, ...]
    split_strategy: str
    test_fraction: float
    split_seed: int
    threshold_strategy: str
    threshold_value: float
    spec_hash: str
    prediction_time: PredictionTime | None = None
    """None when the spec declares no prediction time: the card then says "not reported"."""

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric_features + self.categorical_features

    @property
    def features_table(self) -> str:
        return f"features.{self.name}"


def _require(raw: dict[str, Any], key: str, source: str) -> Any:
    if key not in raw or raw[key] in (None, ""):
        raise CohortSpecError(f"{source}: missing required field '{key}'")
    return raw[key]


def _prediction_time(raw: Any, features: tuple[str, ...], source: str) -> PredictionTime | None:
    """The optional ``prediction_time`` block: ``at`` (a moment), ``statement``, ``features_available_at``."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise CohortSpecError(f"{source}: prediction_time must be a mapping with 'at' and 'statement'")
    at = _require(raw, "at", f"{source} prediction_time")
    if at not in MOMENTS:
        raise CohortSpecError(f"{source}: prediction_time.at '{at}' must be one of {', '.join(MOMENTS)}")
    available: list[tuple[str, tuple[str, ...]]] = []
    seen: set[str] = set()
    for moment, names in (raw.get("features_available_at") or {}).items():
        if moment not in MOMENTS:
            raise CohortSpecError(f"{source}: prediction_time.features_available_at.{moment} is not one of "
                                  f"{', '.join(MOMENTS)}")
        unknown = sorted(set(names or ()) - set(features))
        if unknown:
            raise CohortSpecError(f"{source}: prediction_time.features_available_at.{moment} lists columns that are "
                                  f"not features: {unknown}")
        twice = sorted(seen & set(names or ()))
        if twice:
            raise CohortSpecError(f"{source}: prediction_time.features_available_at lists {twice} at two moments")
        seen |= set(names or ())
        available.append((moment, tuple(names or ())))
    return PredictionTime(at=at, statement=str(_require(raw, "statement", f"{source} prediction_time")).strip(),
                          features_available_at=tuple(available), limitation=str(raw.get("limitation") or "").strip())


def parse_cohort_spec(text: str, source: str = "<string>") -> CohortSpec:
    """Parse and validate a cohort spec, with errors that name the field at fault."""
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise CohortSpecError(f"{source}: expected a mapping at the top level")
    name = _require(raw, "name", source)
    if not _IDENTIFIER.match(name):
        raise CohortSpecError(f"{source}: name '{name}' must be lower_snake_case")
    target = _require(raw, "target", source)
    features = _require(raw, "features", source)
    numeric = tuple(features.get("numeric") or ())
    categorical = tuple(features.get("categorical") or ())
    if not numeric and not categorical:
        raise CohortSpecError(f"{source}: features must list numeric and/or categorical columns")
    overlap = set(numeric) & set(categorical)
    if overlap:
        raise CohortSpecError(f"{source}: features listed as both numeric and categorical: {sorted(overlap)}")
    split = raw.get("split") or {}
    test_fraction = float(split.get("test_fraction", 0.2))
    if not 0.05 <= test_fraction <= 0.5:
        raise CohortSpecError(f"{source}: split.test_fraction must be within [0.05, 0.5]")
    strategy = split.get("strategy", "patient_hash")
    if strategy != "patient_hash":
        raise CohortSpecError(f"{source}: split.strategy '{strategy}' is not supported (patient_hash)")
    threshold = raw.get("operating_threshold") or {}
    return CohortSpec(
        name=name,
        title=_require(raw, "title", source),
        intended_use=str(raw.get("intended_use", "")).strip(),
        target_column=_require(target, "column", f"{source} target"),
        target_sql=_require(target, "sql", f"{source} target"),
        target_definition=_require(target, "definition", f"{source} target"),
        target_source=_require(target, "source", f"{source} target"),
        exclusions=tuple(
            Exclusion(name=e["name"], sql=e["sql"], reason=e.get("reason", "")) for e in raw.get("exclusions") or ()
        ),
        numeric_features=numeric,
        categorical_features=categorical,
        sensitive_attributes=tuple(_require(raw, "sensitive_attributes", source)),
        split_strategy=strategy,
        test_fraction=test_fraction,
        split_seed=int(split.get("seed", 0)),
        threshold_strategy=threshold.get("strategy", "top_fraction"),
        threshold_value=float(threshold.get("value", 0.2)),
        spec_hash=hashlib.sha256(text.encode()).hexdigest(),
        prediction_time=_prediction_time(raw.get("prediction_time"), numeric + categorical, source),
    )


def load_cohort(name: str, directory: Path = COHORTS_DIR) -> CohortSpec:
    path = directory / f"{name}.yaml"
    if not path.exists():
        raise CohortSpecError(f"no cohort spec named '{name}' in {directory}")
    return parse_cohort_spec(path.read_text(), source=str(path.name))


def load_all_cohorts(directory: Path = COHORTS_DIR) -> list[CohortSpec]:
    """Every cohort spec in the folder, in name order."""
    return [load_cohort(p.stem, directory) for p in sorted(directory.glob("*.yaml"))]
