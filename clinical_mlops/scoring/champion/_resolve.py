"""Resolving the cohort's champion in the registry and loading exactly that version to score."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clinical_mlops.training import modelling
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.scoring.names import champion_model_names

__all__ = [
    "CARD_TAG", "CHAMPION_ALIAS", "SOURCE_ALIAS", "AmbiguousChampionError", "ModelRef", "NoModelError",
    "ScoringModel", "load_scoring_model", "no_champion_reason", "registered_card_sha256", "resolve_champion",
]

CHAMPION_ALIAS = "champion"
CARD_TAG = "model_card_sha256"
SOURCE_ALIAS = "champion_alias"


class NoModelError(LookupError):
    """The cohort has no champion: nothing may score (the message says how to promote one)."""


class AmbiguousChampionError(NoModelError):
    """The ``champion`` alias is on more than one of the cohort's registered models: refused, not guessed."""


def no_champion_reason(cohort: str) -> str:
    """The one line batch scoring fails with and the service answers 503 with, when there is no champion."""
    return (
        f"no champion for {cohort}: no model has passed the promotion gate; run the release "
        f"(clinical-mlops demo, or materialize {cohort}/promotion) or approve one with clinical-mlops promote "
        f"--model {modelling.registered_model_name(cohort, 'candidate')} --version N --approver NAME --reason TEXT"
    )


@dataclass(frozen=True)
class ModelRef:
    """A concrete registered model version chosen to score, and why it was chosen."""

    name: str
    version: str
    run_id: str
    source: str
    model_card_sha256: str | None
    operating_threshold: float | None
    note: str = ""

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def as_dict(self) -> dict:
        return {
            "model_name": self.name,
            "model_version": self.version,
            "model_source": self.source,
            "model_card_sha256": self.model_card_sha256,
            "operating_threshold": self.operating_threshold,
        }


def _threshold_of_run(client, run_id: str) -> float | None:
    try:
        value = client.get_run(run_id).data.metrics.get("operating_threshold")
    except Exception:  # noqa: BLE001 - a missing run leaves the threshold unknown, not fatal
        return None
    return None if value is None or math.isnan(value) else float(value)


_NO_ALIAS_CODES = ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")
"""MLflow's error codes for "this alias is not set" and "this registered model does not exist"."""


def _aliased_version(client, name: str, alias: str):
    """The version carrying ``alias`` on ``name``, or None when it carries none (other errors propagate)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if getattr(exc, "error_code", None) in _NO_ALIAS_CODES:
            return None
        raise


def resolve_champion(cohort: str, *, alias: str = CHAMPION_ALIAS) -> ModelRef:
    """The version carrying the ``champion`` alias on the cohort's candidate or mitigated model.

    Raises :class:`NoModelError` when neither carries it, and :class:`AmbiguousChampionError`
    when both do (a promotion clears the other name; two champions are refused, never guessed).
    Uses the tracking/registry URI MLflow is configured with (``tracking.configure``).
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    found = [(name, version) for name in champion_model_names(cohort)
             if (version := _aliased_version(client, name, alias)) is not None]
    if not found:
        raise NoModelError(no_champion_reason(cohort))
    if len(found) > 1:
        both = " and ".join(f"{name} v{version.version}" for name, version in found)
        raise AmbiguousChampionError(
            f"two champions for {cohort}: the '{alias}' alias is on {both}; nothing scores until it is "
            f"removed from one of them"
        )
    name, version = found[0]
    tags = dict(version.tags or {})
    return ModelRef(
        name=name,
        version=str(version.version),
        run_id=str(version.run_id),
        source=SOURCE_ALIAS,
        model_card_sha256=tags.get(CARD_TAG) or None,
        operating_threshold=_threshold_of_run(client, version.run_id),
        note=f"alias '{alias}' on {name}",
    )


def registered_card_sha256(name: str, version: str) -> str | None:
    """The ``model_card_sha256`` tag the registry holds now for one version (None if not recorded)."""
    from mlflow.tracking import MlflowClient

    tags = dict(MlflowClient().get_model_version(name, str(version)).tags or {})
    return tags.get(CARD_TAG) or None


@dataclass(frozen=True)
class ScoringModel:
    """A loaded model version with the cohort spec whose features it takes."""

    ref: ModelRef
    pipeline: object
    spec: CohortSpec
    compiled: object | None = field(default=None, compare=False, repr=False)
    """An equivalent fast scorer of request records (``score(records)``), checked identical at load time."""

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Probability of the positive class for each row of ``frame`` (feature columns)."""
        return modelling.predict_risk(self.pipeline, frame, self.spec)

    def score_records(self, records: Sequence[Mapping[str, object]]) -> np.ndarray:
        """``score`` of canonical feature records, by the compiled scorer when there is one."""
        if self.compiled is not None:
            return self.compiled.score(records)  # type: ignore[attr-defined]
        return self.score(pd.DataFrame(list(records)))

    def flag(self, scores: np.ndarray) -> np.ndarray | None:
        if self.ref.operating_threshold is None:
            return None
        return np.asarray(scores) >= self.ref.operating_threshold


def load_scoring_model(ref: ModelRef, spec: CohortSpec) -> ScoringModel:
    """Load exactly ``ref``'s version and check it takes the cohort spec's features."""
    from clinical_mlops.core import tracking

    pipeline = tracking.load_model(ref.uri)
    expected = getattr(pipeline, "feature_names_in_", None)
    if expected is not None and set(expected) != set(spec.features):
        missing = sorted(set(spec.features) - set(expected))
        extra = sorted(set(expected) - set(spec.features))
        raise ValueError(
            f"{ref.name} v{ref.version} was trained on other features than the cohort spec "
            f"'{spec.name}' declares (spec only: {missing or 'none'}; model only: {extra or 'none'})"
        )
    return ScoringModel(ref=ref, pipeline=pipeline, spec=spec)
