"""A trained workspace built with the domain functions (no Dagster run): fast setup for the
scoring, serving and monitoring tests. The Dagster path itself is covered by test_assets.py."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from threadpoolctl import threadpool_limits

from clinical_mlops.ingestion import deid, landing, uci
from clinical_mlops.features import build as features
from clinical_mlops.training import modelling, fit as training
from clinical_mlops.validation import rules as validation
from clinical_mlops.core import warehouse
from clinical_mlops.features.cohort import CohortSpec, load_cohort
from clinical_mlops_tests.conftest import Workspace
from clinical_mlops_tests.conftest import synthetic_source  # noqa: E402

SYNTHETIC_SOURCE = synthetic_source()


@dataclass(frozen=True)
class Trained:
    workspace: Workspace
    spec: CohortSpec
    extract_ids: list[str]
    outcome: training.TrainingOutcome


def new_workspace(root: Path, mlflow_template: Path) -> Workspace:
    ws = Workspace(root)
    ws.landing.mkdir(parents=True, exist_ok=True)
    (root / "mlflow").mkdir(exist_ok=True)
    shutil.copyfile(mlflow_template, root / "mlflow" / "mlflow.db")
    return ws


def land_and_validate(ws: Workspace, encounters: pd.DataFrame, n_extracts: int, prefix: str = "month") -> list[str]:
    paths = uci.write_sequential_extracts(encounters, ws.landing, n_extracts, prefix=prefix)
    key, _ = deid.pseudonym_key_from_env()
    with warehouse.connect(ws.warehouse) as con:
        for path in paths:
            landing.land_extract(con, path, SYNTHETIC_SOURCE)
            validation.validate_extract(con, SYNTHETIC_SOURCE, path.name, pseudonym_key=key)
    return [p.name for p in paths]


def train_candidate(ws: Workspace, spec: CohortSpec, *, max_iter: int = 15, seed: int = 7) -> training.TrainingOutcome:
    params = modelling.GradientBoostingParams(max_iter=max_iter, seed=seed)
    # One OpenMP thread: on a loaded 2-core machine the boosting threads spin-wait for each other.
    with warehouse.connect(ws.warehouse) as con, threadpool_limits(limits=1):
        features.build_features(con, spec)
        features.assign_split(con, spec)
        return training.train_and_register(
            con, spec, role="candidate", pipeline=modelling.build_gradient_boosting(spec, params),
            params=params.as_dict(), tracking_uri=ws.tracking_uri, artifact_root=ws.artifacts,
        )


def build(root: Path, mlflow_template: Path, encounters: pd.DataFrame, *, n_extracts: int = 2,
          cohort: str = "synthetic_diabetes130_readmission_30d", train_on: int | None = None) -> Trained:
    """Land ``n_extracts`` extracts; train the cohort's candidate on the first ``train_on`` of them."""
    ws = new_workspace(root, mlflow_template)
    spec = load_cohort(cohort)
    extract_ids = land_and_validate(ws, encounters, n_extracts)
    if train_on is not None and train_on < n_extracts:
        keep = extract_ids[:train_on]
        with warehouse.connect(ws.warehouse) as con, threadpool_limits(limits=1):
            features.build_features(con, spec)
            con.execute(
                f"DELETE FROM {spec.features_table} WHERE extract_id NOT IN ({', '.join('?' for _ in keep)})", keep
            )
            features.assign_split(con, spec)
            params = modelling.GradientBoostingParams(max_iter=15, seed=7)
            outcome = training.train_and_register(
                con, spec, role="candidate", pipeline=modelling.build_gradient_boosting(spec, params),
                params=params.as_dict(), tracking_uri=ws.tracking_uri, artifact_root=ws.artifacts,
            )
    else:
        outcome = train_candidate(ws, spec)
    return Trained(workspace=ws, spec=spec, extract_ids=extract_ids, outcome=outcome)
