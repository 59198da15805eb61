"""What changed between two registered versions, and whether the policy's envelope allows it."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import duckdb

from clinical_mlops.registry.aliases import model_signature_columns

__all__ = [
    "CALIBRATION_PREFIXES",
    "NON_HYPERPARAMETERS",
    "NO_MODIFICATION",
    "Envelope",
    "ModelDescription",
    "Modification",
    "check_envelope",
    "classify_modifications",
    "describe_model",
]

NO_MODIFICATION = "no_modification"
CALIBRATION_PREFIXES = ("calibration", "calibrator")
NON_HYPERPARAMETERS = frozenset({"algorithm"})


@dataclass(frozen=True)
class ModelDescription:
    """A registered version as change control sees it (from ml.model_versions and MLflow)."""

    name: str
    version: str
    run_id: str
    algorithm: str
    params: Mapping[str, object]
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    input_extracts: tuple[tuple[str, str], ...]  # (extract_id, sha256)
    cohort_spec_sha256: str
    operating_threshold: float
    git_commit: str = "unknown"
    lock_sha256: str = "unknown"
    registered_at: str = ""
    train_rows: int = 0

    @property
    def features(self) -> dict[str, str]:
        return {**{c: "numeric" for c in self.numeric}, **{c: "categorical" for c in self.categorical}}

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def as_dict(self) -> dict:
        return {**self.__dict__, "params": dict(self.params), "input_extracts": [list(e) for e in self.input_extracts]}

    @classmethod
    def from_dict(cls, raw: Mapping) -> ModelDescription:
        return cls(**{**raw, "numeric": tuple(raw["numeric"]), "categorical": tuple(raw["categorical"]),
                      "input_extracts": tuple(tuple(e) for e in raw["input_extracts"])})


def describe_model(con: duckdb.DuckDBPyConnection, name: str, version: str,
                   signature: Callable[[str, str], tuple[tuple[str, ...], tuple[str, ...]]] | None = None
                   ) -> ModelDescription:
    """A registered version's description; features come from its MLflow signature."""
    cursor = con.execute("SELECT * FROM ml.model_versions WHERE model_name = ? AND model_version = ?",
                         [name, str(version)])
    row = cursor.fetchall()
    if not row:
        raise ValueError(f"{name} v{version} is not in ml.model_versions")
    record = dict(zip([d[0] for d in cursor.description], row[0]))
    numeric, categorical = (signature or model_signature_columns)(name, str(version))
    return ModelDescription(
        name=name,
        version=str(version),
        run_id=record["mlflow_run_id"],
        algorithm=record["algorithm"],
        params=json.loads(record["params_json"]),
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        input_extracts=tuple((e["extract_id"], e["sha256"]) for e in json.loads(record["input_extracts_json"])),
        cohort_spec_sha256=record["cohort_spec_sha256"],
        operating_threshold=float(record["operating_threshold"]),
        git_commit=record["git_commit"],
        lock_sha256=record["lock_sha256"],
        registered_at=str(record["registered_at"]),
        train_rows=int(record["train_rows"]),
    )


@dataclass(frozen=True)
class Modification:
    kind: str
    detail: str


def _is_calibration(key: str) -> bool:
    return key.startswith(CALIBRATION_PREFIXES)


def classify_modifications(champion: ModelDescription, challenger: ModelDescription) -> list[Modification]:
    """Every kind of modification between two versions ([no_modification] when nothing differs)."""
    mods: list[Modification] = []
    old, new = champion.features, challenger.features
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    retyped = sorted(c for c in set(old) & set(new) if old[c] != new[c])
    if added or removed or retyped:
        parts = [f"added {', '.join(added)}" if added else "", f"removed {', '.join(removed)}" if removed else "",
                 f"type changed {', '.join(retyped)}" if retyped else ""]
        mods.append(Modification("feature_set_change", "; ".join(p for p in parts if p)))
    old_algorithm = str(champion.params.get("algorithm", champion.algorithm))
    new_algorithm = str(challenger.params.get("algorithm", challenger.algorithm))
    if old_algorithm != new_algorithm:
        mods.append(Modification("algorithm_change", f"{old_algorithm} → {new_algorithm}"))
    else:  # hyperparameters are only comparable within one algorithm
        keys = sorted((set(champion.params) | set(challenger.params)) - NON_HYPERPARAMETERS)
        changed = [k for k in keys if champion.params.get(k) != challenger.params.get(k)]
        calibration = [k for k in changed if _is_calibration(k)]
        hyper = [k for k in changed if not _is_calibration(k)]
        if hyper:
            mods.append(Modification("hyperparameter_change", "; ".join(
                f"{k}: {champion.params.get(k, '—')} → {challenger.params.get(k, '—')}" for k in hyper)))
        if calibration:
            mods.append(Modification("recalibration", "; ".join(
                f"{k}: {champion.params.get(k, '—')} → {challenger.params.get(k, '—')}" for k in calibration)))
    if champion.cohort_spec_sha256 != challenger.cohort_spec_sha256:
        mods.append(Modification(
            "cohort_spec_change",
            f"cohort spec {champion.cohort_spec_sha256[:12]} → {challenger.cohort_spec_sha256[:12]}: target, "
            "exclusions, split or threshold policy may differ",
        ))
    old_data, new_data = dict(champion.input_extracts), dict(challenger.input_extracts)
    if old_data != new_data:
        added_x = sorted(set(new_data) - set(old_data))
        removed_x = sorted(set(old_data) - set(new_data))
        changed_x = sorted(e for e in set(old_data) & set(new_data) if old_data[e] != new_data[e])
        parts = [f"added extracts {', '.join(added_x)}" if added_x else "",
                 f"removed extracts {', '.join(removed_x)}" if removed_x else "",
                 f"changed content {', '.join(changed_x)}" if changed_x else ""]
        mods.append(Modification("retrain_on_new_data", "; ".join(p for p in parts if p)))
    return mods or [Modification(NO_MODIFICATION, "same features, algorithm, hyperparameters, spec and data")]


@dataclass(frozen=True)
class Envelope:
    inside: bool
    kinds: tuple[str, ...]
    allowed: tuple[str, ...]
    requires_new_review: tuple[str, ...]
    not_covered: tuple[str, ...]

    def describe(self) -> str:
        if self.inside:
            return f"inside the allowed envelope ({', '.join(self.kinds)})"
        outside = [*self.requires_new_review, *(f"{k} (not covered by the policy)" for k in self.not_covered)]
        return f"requires new review: {', '.join(outside)}"


def check_envelope(modifications: Sequence[Modification], allowed: Sequence[str], review: Sequence[str]) -> Envelope:
    """Inside when every modification kind is allowed; unknown kinds fail closed."""
    kinds = tuple(dict.fromkeys(m.kind for m in modifications))
    ok = set(allowed) | {NO_MODIFICATION}
    needs_review = tuple(k for k in kinds if k in set(review))
    not_covered = tuple(k for k in kinds if k not in ok and k not in set(review))
    return Envelope(
        inside=not needs_review and not not_covered,
        kinds=kinds,
        allowed=tuple(k for k in kinds if k in ok),
        requires_new_review=needs_review,
        not_covered=not_covered,
    )
