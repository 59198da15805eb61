"""Fit, record and register one model of a cohort: the domain side of the model assets.

A fit reads the cohort's split from the warehouse, fits the pipeline, fixes the operating
threshold on the training data, scores the test split, logs and registers the model in
MLflow with its full provenance, and writes test predictions and a ``ml.model_versions`` row
to the warehouse (the whole test split, scored in chunks; the fit itself may use a seeded
patient-grouped subsample above ``max_training_rows``). If the warehouse write fails, the just-registered version is deleted so
the registry and the warehouse never disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline

from clinical_mlops.evaluation import metrics as evaluation
from clinical_mlops.features import build as features
from clinical_mlops.training import modelling
from clinical_mlops.core import provenance, tracking
from clinical_mlops.core.chunking import DEFAULT_CHUNK_ROWS
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.training.params import DEFAULT_MAX_TRAINING_ROWS, DEFAULT_SUBSAMPLE_SEED
from clinical_mlops.core.warehouse import scalar, transaction

__all__ = ["DEFAULT_MAX_TRAINING_ROWS", "DEFAULT_SUBSAMPLE_SEED", "TRAINING_SAMPLES_DDL", "TrainingOutcome",
    "input_extracts", "latest_model_version", "sample_record", "score_split", "train_and_register"]


@dataclass(frozen=True)
class TrainingOutcome:
    model: tracking.RegisteredModel
    algorithm: str
    train_rows: int
    test_rows: int
    operating_threshold: float
    test_auroc: float
    test_auprc: float
    test_brier: float
    input_extracts: list[dict[str, str]]
    provenance: dict[str, str]
    train_rows_used: int = 0
    subsample_seed: int = 0
    max_training_rows: int = 0


def input_extracts(con: duckdb.DuckDBPyConnection, spec: CohortSpec) -> list[dict[str, str]]:
    """The extracts (and their sha256 data versions) whose rows are in the cohort's features."""
    rows = con.execute(
        f"""SELECT e.extract_id, e.sha256 FROM raw.extracts e
            WHERE e.source = ? AND e.extract_id IN (SELECT DISTINCT extract_id FROM {spec.features_table})
              AND NOT list_contains(?, e.extract_id)
            ORDER BY e.extract_id""",
        [spec.source, features.external_extracts(con, spec)],
    ).fetchall()
    return [{"extract_id": extract_id, "sha256": sha} for extract_id, sha in rows]


TRAINING_SAMPLES_DDL = """CREATE TABLE IF NOT EXISTS ml.training_samples (
    registered_at TIMESTAMP NOT NULL,
    cohort VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    train_rows_full BIGINT NOT NULL,      -- rows on the training side of the split
    train_patients_full BIGINT NOT NULL,
    train_rows_used BIGINT NOT NULL,      -- rows the model was fitted on
    train_patients_used BIGINT NOT NULL,
    max_training_rows BIGINT NOT NULL,
    subsample_seed BIGINT NOT NULL,
    subsampled BOOLEAN NOT NULL
)"""


def sample_record(sample: features.TrainingSample) -> dict[str, int | bool]:
    """What a model's training sample was, for MLflow and the model card (counts only)."""
    return {
        "train_rows_full": sample.full_rows, "train_patients_full": sample.full_patients,
        "train_rows_used": sample.used_rows, "train_patients_used": sample.used_patients,
        "max_training_rows": sample.max_rows, "subsample_seed": sample.seed, "subsampled": sample.subsampled,
    }


def score_split(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, fitted: Pipeline, split: str, *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encounter ids, labels and risk scores of every row of one side, scored chunk by chunk."""
    ids: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    for frame in features.iter_split_frames(con, spec, split, chunk_rows=chunk_rows):
        ids.append(frame["encounter_id"].to_numpy(dtype=np.int64))
        labels.append(frame["label"].to_numpy())
        scores.append(modelling.predict_risk(fitted, frame, spec))
    if not ids:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.array([], dtype=float)
    return np.concatenate(ids), np.concatenate(labels), np.concatenate(scores)


def train_and_register(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    *,
    role: str,
    pipeline: Pipeline,
    params: dict,
    tracking_uri: str,
    artifact_root: Path,
    max_training_rows: int = DEFAULT_MAX_TRAINING_ROWS,
    subsample_seed: int = DEFAULT_SUBSAMPLE_SEED,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> TrainingOutcome:
    """Fit ``pipeline`` on the cohort's training split and register it; see module docstring.

    Above ``max_training_rows`` training rows the fit uses a seeded patient-grouped subsample
    (:func:`features.load_training_sample`); seed, full and used counts go to MLflow and to
    ``ml.training_samples``. The test side is always scored whole, in chunks of ``chunk_rows``.
    """
    tracking.configure(tracking_uri, artifact_root)
    con.execute(TRAINING_SAMPLES_DDL)
    sample = features.load_training_sample(con, spec, max_rows=max_training_rows, seed=subsample_seed)
    train = sample.frame
    test_rows = int(scalar(con, "SELECT count(*) FROM ml.splits WHERE cohort = ? AND split = 'test'", [spec.name]))
    if train.empty or test_rows == 0:
        raise ValueError(f"cohort {spec.name}: the split is empty; materialize training_split first")
    if train["label"].nunique() < 2:
        raise ValueError(f"cohort {spec.name}: the training split holds a single class")
    split = features.summarise_split(con, spec)

    fitted = modelling.fit(pipeline, train, spec)
    train_scores = modelling.predict_risk(fitted, train, spec)
    threshold = evaluation.operating_threshold(
        train["label"].to_numpy(), train_scores, strategy=spec.threshold_strategy, value=spec.threshold_value
    )
    del train_scores
    test_ids, y_test, test_scores = score_split(con, spec, fitted, "test", chunk_rows=chunk_rows)
    metrics = {
        "test_auroc": float(roc_auc_score(y_test, test_scores)),
        "test_auprc": float(average_precision_score(y_test, test_scores)),
        "test_brier": float(brier_score_loss(y_test, test_scores)),
        "test_prevalence": float(y_test.mean()),
        "operating_threshold": float(threshold),
        "alerts_per_100": float(evaluation.alerts_per_100(test_scores, threshold)),
    }
    extracts = input_extracts(con, spec)
    code = provenance.code_provenance()
    tags = {
        **code,
        "cohort": spec.name,
        "cohort_spec_sha256": spec.spec_hash,
        "source": spec.source,
        "source_contract_sha256": spec.contract_sha256,
        "role": role,
        "train_ids_sha256": split.train_ids_sha256,
        "test_ids_sha256": split.test_ids_sha256,
        **{f"data_version.{e['extract_id']}": e["sha256"] for e in extracts},
    }
    model = tracking.log_fitted_model(
        experiment=spec.name,
        artifact_root=artifact_root,
        registered_name=modelling.registered_model_name(spec.name, role),
        run_name=f"{spec.name}-{role}",
        model=fitted,
        signature=tracking.signature_for(list(spec.numeric_features), list(spec.categorical_features)),
        params={
            **params, "train_rows": sample.full_rows, "test_rows": len(test_ids), "n_features": len(spec.features),
            "train_rows_used": sample.used_rows, "train_patients_used": sample.used_patients,
            "max_training_rows": sample.max_rows, "subsample_seed": sample.seed,
            "train_subsampled": sample.subsampled,
        },
        metrics=metrics,
        tags=tags,
        json_artifacts={
            "inputs.json": {
                "extracts": extracts, "split": split.__dict__, "cohort_spec_sha256": spec.spec_hash,
                "training_sample": sample_record(sample),
            },
            "features.json": {"numeric": spec.numeric_features, "categorical": spec.categorical_features},
        },
        pip_requirements=provenance.pip_requirements(),
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    scored = pd.DataFrame({"encounter_id": test_ids, "label": y_test.astype("int32"), "score": test_scores})
    con.register("scored", scored)
    try:
        with transaction(con):
            con.execute(
                "INSERT INTO ml.predictions SELECT ?, ?, ?, ?, 'test', encounter_id, label, score, ? FROM scored",
                [spec.name, model.name, model.version, model.run_id, now],
            )
            con.execute(
                "INSERT INTO ml.model_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    now, spec.name, role, model.name, model.version, model.run_id, params["algorithm"],
                    json.dumps(params, sort_keys=True), float(threshold), sample.full_rows, len(test_ids),
                    json.dumps(extracts), split.train_ids_sha256, split.test_ids_sha256, spec.spec_hash,
                    code["git_commit"], code["git_dirty"] == "true", code["lock_sha256"],
                    spec.source, spec.contract_sha256,
                ],
            )
            con.execute(
                "INSERT INTO ml.training_samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [now, spec.name, model.name, model.version, sample.full_rows, sample.full_patients,
                 sample.used_rows, sample.used_patients, sample.max_rows, sample.seed, sample.subsampled],
            )
    except BaseException:
        tracking.delete_model_version(model.name, model.version)
        raise
    finally:
        con.unregister("scored")
    return TrainingOutcome(
        model=model,
        algorithm=params["algorithm"],
        train_rows=sample.full_rows,
        test_rows=len(test_ids),
        train_rows_used=sample.used_rows,
        subsample_seed=sample.seed,
        max_training_rows=sample.max_rows,
        operating_threshold=float(threshold),
        test_auroc=metrics["test_auroc"],
        test_auprc=metrics["test_auprc"],
        test_brier=metrics["test_brier"],
        input_extracts=extracts,
        provenance=code,
    )


def latest_model_version(con: duckdb.DuckDBPyConnection, cohort: str, role: str) -> dict | None:
    """The most recently registered version of a cohort's model in a role, as a dict."""
    cursor = con.execute(
        """SELECT * FROM ml.model_versions WHERE cohort = ? AND role = ?
           ORDER BY registered_at DESC, CAST(model_version AS INTEGER) DESC LIMIT 1""",
        [cohort, role],
    )
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row))
