"""The change-control report: both models on the current test split, the diff, fairness and drift."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import numpy as np
import pandas as pd

from clinical_mlops.drift import statistics as drift_lib
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.governance.policy import Policy
from clinical_mlops.registry.aliases import load_scoring_model
from clinical_mlops.registry.change_control._diff import (
    Envelope,
    ModelDescription,
    Modification,
    check_envelope,
    classify_modifications,
)
from clinical_mlops.registry.change_control._fairness import FairnessComparison, SliceSampler, compare_fairness
from clinical_mlops.registry.change_control._paired import paired_bootstrap

__all__ = ["ChangeControlReport", "Scorer", "build_report", "drift_context"]


@dataclass(frozen=True)
class ChangeControlReport:
    cohort: str
    model_name: str
    created_at: str
    policy_sha256: str
    policy_version: str
    challenger: ModelDescription
    champion: ModelDescription | None
    evaluation_rows: int
    evaluation_positives: int
    evaluation_ids_sha256: str
    metrics: pd.DataFrame
    modifications: tuple[Modification, ...]
    envelope: Envelope | None
    fairness: FairnessComparison
    drift: tuple[dict, ...]
    caveats: tuple[str, ...]
    n_boot: int
    seed: int
    confidence: float
    min_group_size: int
    score_sources: dict = field(default_factory=dict)

    def overall(self, metric: str) -> dict:
        table = self.metrics
        row = table[(table["attribute"] == "overall") & (table["metric"] == metric)]
        return row.iloc[0].to_dict()

    def to_json(self) -> str:
        def clean(value):
            if isinstance(value, float) and math.isnan(value):
                return None
            return value

        payload = {
            **{k: v for k, v in self.__dict__.items() if k not in ("metrics", "challenger", "champion",
                                                                    "modifications", "envelope", "fairness")},
            "challenger": self.challenger.as_dict(),
            "champion": None if self.champion is None else self.champion.as_dict(),
            "modifications": [m.__dict__ for m in self.modifications],
            "envelope": None if self.envelope is None else self.envelope.__dict__,
            "fairness": self.fairness.as_dict(),
            "metrics": [{k: clean(v) for k, v in r.items()} for r in self.metrics.to_dict("records")],
        }
        return json.dumps(payload, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> ChangeControlReport:
        raw = json.loads(text)
        fairness = raw.pop("fairness")
        envelope = raw.pop("envelope")
        return cls(**{
            **raw,
            "challenger": ModelDescription.from_dict(raw["challenger"]),
            "champion": None if raw["champion"] is None else ModelDescription.from_dict(raw["champion"]),
            "metrics": pd.DataFrame(raw["metrics"]).astype({"champion": float, "challenger": float, "delta": float,
                                                           "lower": float, "upper": float,
                                                           "challenger_lower": float, "challenger_upper": float}),
            "modifications": tuple(Modification(**m) for m in raw["modifications"]),
            "envelope": None if envelope is None else Envelope(**{k: tuple(v) if isinstance(v, list) else v
                                                                 for k, v in envelope.items()}),
            "fairness": FairnessComparison.from_dict(fairness),
            "drift": tuple(raw["drift"]),
            "caveats": tuple(raw["caveats"]),
        })


Scorer = Callable[[str, str, pd.DataFrame], np.ndarray]


def _default_scorer(name: str, version: str, frame: pd.DataFrame) -> np.ndarray:
    return load_scoring_model(name, version).predict_risk(frame)


def _scores(con: duckdb.DuckDBPyConnection, model: ModelDescription, frame: pd.DataFrame, scorer: Scorer
            ) -> tuple[np.ndarray, str]:
    """Stored test predictions when they cover every evaluation row, else a fresh scoring."""
    con.register("evaluation_ids", frame[["encounter_id"]])
    try:
        stored = con.execute(
            """SELECT e.encounter_id, p.score FROM evaluation_ids e
               LEFT JOIN (SELECT encounter_id, any_value(score) AS score FROM ml.predictions
                          WHERE model_name = ? AND model_version = ? AND split = 'test' GROUP BY encounter_id) p
               USING (encounter_id) ORDER BY e.encounter_id""",
            [model.name, model.version],
        ).df()
    finally:
        con.unregister("evaluation_ids")
    if len(stored) == len(frame) and stored["score"].notna().all():
        return stored["score"].to_numpy(dtype=np.float64), "stored test predictions"
    return np.asarray(scorer(model.name, model.version, frame), dtype=np.float64), "scored from the registry"


def _ids_hash(ids: np.ndarray) -> str:
    digest = hashlib.sha256()
    for value in np.sort(np.asarray(ids, dtype=np.int64)):
        digest.update(f"{value}\n".encode())
    return digest.hexdigest()


def drift_context(con: duckdb.DuckDBPyConnection, cohort: str, challenger: ModelDescription) -> tuple[dict, ...]:
    """The latest drift verdict of each extract, and whether the challenger trained on it."""
    trained_on = {e for e, _ in challenger.input_extracts}
    out = []
    for run in drift_lib.latest_runs(con, cohort):
        top = [f["feature"] for f in drift_lib.top_drifted(con, run["drift_run_id"], 5) if f["drifted"]]
        out.append({
            "extract_id": run["extract_id"],
            "computed_at": str(run["computed_at"]),
            "dataset_drift": bool(run["dataset_drift"]),
            "drift_share": float(run["drift_share"]),
            "features_drifted": int(run["features_drifted"]),
            "features_tested": int(run["features_tested"]),
            "prediction_drift": run["prediction_drift"],
            "target_drift": run["target_drift"],
            "top_drifted": top,
            "reference": f"{run['reference_kind']} {run['reference_model'] or ''} v{run['reference_version'] or '?'}",
            "challenger_trained_on_it": run["extract_id"] in trained_on,
        })
    return tuple(out)


def build_report(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    policy: Policy,
    *,
    challenger: ModelDescription,
    champion: ModelDescription | None,
    scorer: Scorer = _default_scorer,
    n_boot: int | None = None,
    seed: int | None = None,
) -> ChangeControlReport:
    """Compare ``challenger`` with ``champion`` (or assess it alone) on the current test split."""
    frame = con.execute(
        f"""SELECT f.* FROM {spec.features_table} f
            JOIN ml.splits s ON s.cohort = ? AND s.encounter_id = f.encounter_id
            WHERE s.split = 'test' ORDER BY f.encounter_id""",
        [spec.name],
    ).df()
    if frame.empty:
        raise ValueError(f"cohort {spec.name}: the test split is empty; materialize training_split first")
    caveats = []
    models = [m for m in (champion, challenger) if m is not None]
    sources = {}
    scores = []
    for model in models:
        s, source = _scores(con, model, frame, scorer)
        scores.append(s)
        sources[model.label] = source
        if model.cohort_spec_sha256 != spec.spec_hash:
            caveats.append(f"{model.label} was trained under a different cohort spec "
                           f"({model.cohort_spec_sha256[:12]}, now {spec.spec_hash[:12]}); the current test "
                           "split may overlap its training patients")
    y = frame["label"].to_numpy(dtype=np.float64)
    attributes = [a for a in spec.sensitive_attributes if a in frame.columns]
    n_boot = policy.fairness.n_bootstrap if n_boot is None else n_boot
    seed = policy.fairness.bootstrap_seed if seed is None else seed
    thresholds = [m.operating_threshold for m in models]
    paired = paired_bootstrap(
        y, scores, thresholds, {a: frame[a].to_numpy() for a in attributes},
        n_boot=n_boot, seed=seed, confidence=policy.fairness.confidence,
        min_group_size=policy.fairness.min_group_size,
    )
    sampler = None if champion is None else SliceSampler(
        y, scores, thresholds, frame[attributes], n_boot, seed, policy.fairness.confidence,
        policy.fairness.min_group_size, paired)
    modifications: tuple[Modification, ...] = ()
    envelope = None
    if champion is not None:
        modifications = tuple(classify_modifications(champion, challenger))
        envelope = check_envelope(modifications, policy.change_control.allowed_modifications,
                                  policy.change_control.requires_new_review)
    return ChangeControlReport(
        cohort=spec.name,
        model_name=challenger.name,
        created_at=datetime.now(UTC).replace(tzinfo=None).isoformat() + "Z",
        policy_sha256=policy.sha256,
        policy_version=policy.version,
        challenger=challenger,
        champion=champion,
        evaluation_rows=len(frame),
        evaluation_positives=int(y.sum()),
        evaluation_ids_sha256=_ids_hash(frame["encounter_id"].to_numpy()),
        metrics=paired.table,
        modifications=modifications,
        envelope=envelope,
        fairness=compare_fairness(con, policy, spec.name, champion, challenger, sampler),
        drift=drift_context(con, spec.name, challenger),
        caveats=tuple(caveats),
        n_boot=n_boot,
        seed=seed,
        confidence=policy.fairness.confidence,
        min_group_size=policy.fairness.min_group_size,
        score_sources=sources,
    )
