"""What the training assets do, as plain functions (no Dagster), one per asset.

* :func:`split` — ``[cohort, training_split]``;
* :func:`train_baseline` — ``[cohort, baseline_model]``;
* :func:`train_candidate` — ``[cohort, candidate_model]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from clinical_mlops.core.chunking import DEFAULT_CHUNK_ROWS, bound_memory
from clinical_mlops.features import build as features
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.training import fit, modelling

__all__ = ["SplitStep", "split", "train_baseline", "train_candidate"]


@dataclass(frozen=True)
class SplitStep:
    summary: features.SplitSummary
    seed: int

    @property
    def no_patient_overlap(self) -> bool:
        """No patient on both sides, and neither side empty."""
        s = self.summary
        return s.patient_overlap == 0 and s.test_rows > 0 and s.train_rows > 0


def split(con: duckdb.DuckDBPyConnection, spec: CohortSpec) -> SplitStep:
    """``[cohort, training_split]``: the deterministic patient-grouped train/test split (seeded hash of
    the pseudonymised patient key) in ``ml.splits``, with both id sets hashed."""
    return SplitStep(summary=features.assign_split(con, spec), seed=spec.split_seed)


def _train(con: duckdb.DuckDBPyConnection, spec: CohortSpec, role: str, pipeline, params: dict, *,
           tracking_uri: str, artifact_root: Path | str, max_training_rows: int, subsample_seed: int,
           chunk_rows: int) -> fit.TrainingOutcome:
    bound_memory(con)
    return fit.train_and_register(
        con, spec, role=role, pipeline=pipeline, params=params, tracking_uri=tracking_uri,
        artifact_root=Path(artifact_root), max_training_rows=max_training_rows, subsample_seed=subsample_seed,
        chunk_rows=chunk_rows,
    )


def train_baseline(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    params: modelling.LogisticRegressionParams | None = None,
    *,
    tracking_uri: str,
    artifact_root: Path | str,
    max_training_rows: int = fit.DEFAULT_MAX_TRAINING_ROWS,
    subsample_seed: int = fit.DEFAULT_SUBSAMPLE_SEED,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> fit.TrainingOutcome:
    """``[cohort, baseline_model]``: fit the logistic-regression baseline (scaled numerics, one-hot
    categoricals; default hyperparameters unless given), track and register it in MLflow, score the
    whole test split into ``ml.predictions``."""
    params = params or modelling.LogisticRegressionParams()
    return _train(con, spec, "baseline", modelling.build_logistic_regression(spec, params), params.as_dict(),
                  tracking_uri=tracking_uri, artifact_root=artifact_root, max_training_rows=max_training_rows,
                  subsample_seed=subsample_seed, chunk_rows=chunk_rows)


def train_candidate(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    params: modelling.GradientBoostingParams | None = None,
    *,
    tracking_uri: str,
    artifact_root: Path | str,
    max_training_rows: int = fit.DEFAULT_MAX_TRAINING_ROWS,
    subsample_seed: int = fit.DEFAULT_SUBSAMPLE_SEED,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> fit.TrainingOutcome:
    """``[cohort, candidate_model]``: fit the histogram-gradient-boosting candidate (native categorical
    splits; default hyperparameters unless given), track and register it in MLflow, score the whole
    test split into ``ml.predictions``."""
    params = params or modelling.GradientBoostingParams()
    return _train(con, spec, "candidate", modelling.build_gradient_boosting(spec, params), params.as_dict(),
                  tracking_uri=tracking_uri, artifact_root=artifact_root, max_training_rows=max_training_rows,
                  subsample_seed=subsample_seed, chunk_rows=chunk_rows)
