"""Training: patient-grouped split, a logistic-regression baseline and a gradient-boosted candidate."""


from typing import TYPE_CHECKING

import dagster as dg

from clinical_mlops.defs.partitions import cohort_code_version
from clinical_mlops.defs.resources import WAREHOUSE_POOL, TrackingResource, WarehouseResource
from clinical_mlops.features.cohort import CohortSpec, load_all_cohorts
from clinical_mlops.training.params import (
    DEFAULT_MAX_TRAINING_ROWS,
    DEFAULT_SUBSAMPLE_SEED,
    GradientBoostingParams,
    LogisticRegressionParams,
)

if TYPE_CHECKING:
    from clinical_mlops.training import fit as training

__all__ = [
    "BaselineModelConfig",
    "CandidateModelConfig",
    "TrainingSampleConfig",
    "build_model_assets",
    "build_training_split",
    "defs",
]

_BASELINE = LogisticRegressionParams()
_CANDIDATE = GradientBoostingParams()


class TrainingSampleConfig(dg.Config):
    max_training_rows: int = DEFAULT_MAX_TRAINING_ROWS
    """Above this many training rows the fit uses a seeded patient-grouped subsample (test is scored whole)."""
    subsample_seed: int = DEFAULT_SUBSAMPLE_SEED


class BaselineModelConfig(TrainingSampleConfig):
    """Defaults: :class:`~clinical_mlops.training.modelling.LogisticRegressionParams`."""

    C: float = _BASELINE.C
    max_iter: int = _BASELINE.max_iter
    seed: int = _BASELINE.seed

    def params(self) -> LogisticRegressionParams:
        return LogisticRegressionParams(C=self.C, max_iter=self.max_iter, seed=self.seed)


class CandidateModelConfig(TrainingSampleConfig):
    """Defaults: :class:`~clinical_mlops.training.modelling.GradientBoostingParams`."""

    max_iter: int = _CANDIDATE.max_iter
    learning_rate: float = _CANDIDATE.learning_rate
    max_leaf_nodes: int = _CANDIDATE.max_leaf_nodes
    min_samples_leaf: int = _CANDIDATE.min_samples_leaf
    l2_regularization: float = _CANDIDATE.l2_regularization
    seed: int = _CANDIDATE.seed

    def params(self) -> GradientBoostingParams:
        return GradientBoostingParams(**self.model_dump(exclude={"max_training_rows", "subsample_seed"}))


def build_training_split(spec: CohortSpec) -> dg.AssetsDefinition:
    key = dg.AssetKey([spec.name, "training_split"])

    @dg.asset(
        key=key,
        deps=[dg.AssetKey([spec.name, "encounter_features"])],
        group_name="training",
        kinds={"duckdb"},
        code_version=cohort_code_version(spec, "1"),
        pool=WAREHOUSE_POOL,
        description="Deterministic patient-grouped train/test split (seeded hash of the pseudonymised patient key).",
        check_specs=[
            dg.AssetCheckSpec("no_patient_overlap", asset=key, blocking=True,
                              description="No patient appears in both train and test.")
        ],
    )
    def training_split(warehouse: WarehouseResource) -> dg.MaterializeResult:
        from clinical_mlops.training import steps

        with warehouse.connect() as con:
            step = steps.split(con, spec)
        summary = step.summary
        return dg.MaterializeResult(
            metadata={
                "train_rows": summary.train_rows,
                "test_rows": summary.test_rows,
                "train_patients": summary.train_patients,
                "test_patients": summary.test_patients,
                "train_ids_sha256": summary.train_ids_sha256,
                "test_ids_sha256": summary.test_ids_sha256,
                "test_prevalence": round(summary.test_prevalence, 5),
                "seed": step.seed,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="no_patient_overlap",
                    passed=step.no_patient_overlap,
                    metadata={"patients_in_both": summary.patient_overlap},
                )
            ],
        )

    return training_split


def _model_result(outcome: "training.TrainingOutcome", tracking_resource: TrackingResource,
                  spec: CohortSpec) -> dg.MaterializeResult:
    from clinical_mlops.core import tracking as tracking_lib

    model = outcome.model
    return dg.MaterializeResult(
        metadata={
            "registered_model": model.name,
            "source": spec.source,
            "source_contract_sha256": spec.contract_sha256,
            "model_version": model.version,
            "mlflow_run_id": model.run_id,
            "mlflow_run": dg.MetadataValue.url(tracking_lib.run_url(tracking_resource.ui_url, model.experiment_id, model.run_id)),
            "mlflow_model_version": dg.MetadataValue.url(
                tracking_lib.model_version_url(tracking_resource.ui_url, model.name, model.version)
            ),
            "algorithm": outcome.algorithm,
            "train_rows": outcome.train_rows,
            "test_rows": outcome.test_rows,
            "train_rows_used": outcome.train_rows_used,
            "max_training_rows": outcome.max_training_rows,
            "subsample_seed": outcome.subsample_seed,
            "test_auroc": round(outcome.test_auroc, 4),
            "test_auprc": round(outcome.test_auprc, 4),
            "test_brier": round(outcome.test_brier, 4),
            "operating_threshold": round(outcome.operating_threshold, 5),
            "git_commit": outcome.provenance["git_commit"],
            "git_dirty": outcome.provenance["git_dirty"],
            "lock_sha256": outcome.provenance["lock_sha256"],
            "input_extracts": dg.MetadataValue.json(outcome.input_extracts),
        },
        tags={"mlflow_run_id": model.run_id},
    )


def build_model_assets(spec: CohortSpec) -> list[dg.AssetsDefinition]:
    split_key = dg.AssetKey([spec.name, "training_split"])
    common = dict(deps=[split_key], group_name="training", kinds={"scikit-learn", "mlflow"}, pool=WAREHOUSE_POOL)

    @dg.asset(key=[spec.name, "baseline_model"], code_version=cohort_code_version(spec, "1"), description=(
        "Logistic-regression baseline (scaled numerics, one-hot categoricals), tracked and registered in MLflow."
    ), **common)
    def baseline_model(
        config: BaselineModelConfig, warehouse: WarehouseResource, tracking: TrackingResource
    ) -> dg.MaterializeResult:
        from clinical_mlops.training import steps

        with warehouse.connect() as con:
            outcome = steps.train_baseline(
                con, spec, config.params(), tracking_uri=tracking.tracking_uri, artifact_root=tracking.artifact_root,
                max_training_rows=config.max_training_rows, subsample_seed=config.subsample_seed,
            )
        return _model_result(outcome, tracking, spec)

    @dg.asset(key=[spec.name, "candidate_model"], code_version=cohort_code_version(spec, "1"), description=(
        "Histogram gradient boosting with native categorical splits, tracked and registered in MLflow."
    ), **common)
    def candidate_model(
        config: CandidateModelConfig, warehouse: WarehouseResource, tracking: TrackingResource
    ) -> dg.MaterializeResult:
        from clinical_mlops.training import steps

        with warehouse.connect() as con:
            outcome = steps.train_candidate(
                con, spec, config.params(), tracking_uri=tracking.tracking_uri, artifact_root=tracking.artifact_root,
                max_training_rows=config.max_training_rows, subsample_seed=config.subsample_seed,
            )
        return _model_result(outcome, tracking, spec)

    return [baseline_model, candidate_model]


@dg.definitions
def defs() -> dg.Definitions:
    assets: list[dg.AssetsDefinition] = []
    for spec in load_all_cohorts():
        assets.append(build_training_split(spec))
        assets.extend(build_model_assets(spec))
    return dg.Definitions(assets=assets)
