"""Fit, record and register one model of a cohort: the domain side of the model assets.

A fit reads the cohort's split from the warehouse, fits the pipeline, fixes the operating
threshold on the training data, scores the test split, logs and registers the model in
MLflow with its full provenance, and writes test predictions and a ``ml.model_versions`` row
to the warehouse. If the warehouse write fails, the just-registered version is deleted so
the registry and the warehouse never disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline

from clinical_mlops import evaluation, features, modelling, provenance, tracking
from clinical_mlops.cohort import CohortSpec
from clinical_mlops.warehouse import transaction


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


def input_extracts(con: duckdb.DuckDBPyConnection, spec: CohortSpec) -> list[dict[str, str]]:
    """The extracts (and their sha256 data versions) whose rows are in the cohort's features."""
    rows = con.execute(
        f"""SELECT e.extract_id, e.sha256 FROM raw.extracts e
            WHERE e.extract_id IN (SELECT DISTINCT extract_id FROM {spec.features_table})
            ORDER BY e.extract_id"""
    ).fetchall()
    return [{"extract_id": extract_id, "sha256": sha} for extract_id, sha in rows]


def registered_name(spec: CohortSpec, role: str) -> str:
    return f"{spec.name}_{role}"


def train_and_register(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    *,
    role: str,
    pipeline: Pipeline,
    params: dict,
    tracking_uri: str,
    artifact_root: Path,
) -> TrainingOutcome:
    """Fit ``pipeline`` on the cohort's training split and register it; see module docstring."""
    tracking.configure(tracking_uri, artifact_root)
    train = features.load_split_frame(con, spec, "train")
    test = features.load_split_frame(con, spec, "test")
    if train.empty or test.empty:
        raise ValueError(f"cohort {spec.name}: the split is empty; materialize training_split first")
    if train["label"].nunique() < 2:
        raise ValueError(f"cohort {spec.name}: the training split holds a single class")
    split = features.summarise_split(con, spec)

    fitted = modelling.fit(pipeline, train, spec)
    train_scores = modelling.predict_risk(fitted, train, spec)
    threshold = evaluation.operating_threshold(
        train["label"].to_numpy(), train_scores, strategy=spec.threshold_strategy, value=spec.threshold_value
    )
    test_scores = modelling.predict_risk(fitted, test, spec)
    y_test = test["label"].to_numpy()
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
        "role": role,
        "train_ids_sha256": split.train_ids_sha256,
        "test_ids_sha256": split.test_ids_sha256,
        **{f"data_version.{e['extract_id']}": e["sha256"] for e in extracts},
    }
    model = tracking.log_fitted_model(
        experiment=spec.name,
        artifact_root=artifact_root,
        registered_name=registered_name(spec, role),
        run_name=f"{spec.name}-{role}",
        model=fitted,
        signature=tracking.signature_for(list(spec.numeric_features), list(spec.categorical_features)),
        params={**params, "train_rows": len(train), "test_rows": len(test), "n_features": len(spec.features)},
        metrics=metrics,
        tags=tags,
        json_artifacts={
            "inputs.json": {"extracts": extracts, "split": split.__dict__, "cohort_spec_sha256": spec.spec_hash},
            "features.json": {"numeric": spec.numeric_features, "categorical": spec.categorical_features},
        },
        pip_requirements=provenance.pip_requirements(),
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    scored = pd.DataFrame({"encounter_id": test["encounter_id"], "label": y_test.astype("int32"), "score": test_scores})
    con.register("scored", scored)
    try:
        with transaction(con):
            con.execute(
                "INSERT INTO ml.predictions SELECT ?, ?, ?, ?, 'test', encounter_id, label, score, ? FROM scored",
                [spec.name, model.name, model.version, model.run_id, now],
            )
            con.execute(
                "INSERT INTO ml.model_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    now, spec.name, role, model.name, model.version, model.run_id, params["algorithm"],
                    json.dumps(params, sort_keys=True), float(threshold), len(train), len(test),
                    json.dumps(extracts), split.train_ids_sha256, split.test_ids_sha256, spec.spec_hash,
                    code["git_commit"], code["git_dirty"] == "true", code["lock_sha256"],
                ],
            )
    except BaseException:
        tracking.delete_model_version(model.name, model.version)
        raise
    finally:
        con.unregister("scored")
    return TrainingOutcome(
        model=model,
        algorithm=params["algorithm"],
        train_rows=len(train),
        test_rows=len(test),
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
