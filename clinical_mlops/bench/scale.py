"""Each data stage at a given number of synthetic encounters, one stage per process.

Stages run in order on one workspace (``--workspace``): generate the extracts, land,
validate, features, split, train, then drift statistics, fairness aggregates, evaluation and
batch scoring. Each call reads what the previous stages left in the workspace's warehouse.
Run as ``python -m clinical_mlops.bench.scale STAGE --rows N --workspace DIR --result out.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stage:
    name: str
    target: str
    """``module:function`` taking ``(workspace: Path, rows: int)`` and returning a JSON-able dict."""


STAGES: tuple[Stage, ...] = (
    Stage("generate", "clinical_mlops.bench.scale:generate"),
    Stage("land", "clinical_mlops.bench.scale:land"),
    Stage("validate", "clinical_mlops.bench.scale:validate"),
    Stage("features", "clinical_mlops.bench.scale:features"),
    Stage("split", "clinical_mlops.bench.scale:split"),
    Stage("train", "clinical_mlops.bench.scale:train"),
    Stage("drift_statistics", "clinical_mlops.bench.scale:drift_statistics"),
    Stage("fairness_aggregates", "clinical_mlops.bench.scale:fairness_aggregates"),
    Stage("evaluation", "clinical_mlops.bench.scale:evaluation"),
    Stage("batch_scoring", "clinical_mlops.bench.scale:batch_scoring"),
)
COHORT = "readmission_30d"
DUCKDB_MEMORY_LIMIT = "3GB"
"""DuckDB's buffer cap in the ML stages (it spills to disk beyond); the 8 GB budget is per process."""


# --- data stages: clinical_mlops.bench.scale_stages works on the same workspace layout --------------

def generate(workspace: Path, rows: int) -> dict:
    from clinical_mlops.bench import scale_stages

    result = scale_stages.generate(workspace, n_encounters=rows)
    return {**result, "rows_processed": rows}


def land(workspace: Path, rows: int) -> dict:
    from clinical_mlops.bench import scale_stages

    return _processed(scale_stages.land(workspace), rows)


def validate(workspace: Path, rows: int) -> dict:
    from clinical_mlops.bench import scale_stages

    return _processed(scale_stages.validate(workspace), rows)


def features(workspace: Path, rows: int) -> dict:
    from clinical_mlops.bench import scale_stages

    return _processed(scale_stages.build_features(workspace, cohort=COHORT), rows)


def split(workspace: Path, rows: int) -> dict:
    from clinical_mlops.bench import scale_stages

    return _processed(scale_stages.split(workspace, cohort=COHORT), rows)


def train(workspace: Path, rows: int) -> dict:
    from clinical_mlops.bench import scale_stages

    result = scale_stages.train(workspace, cohort=COHORT)
    return {**result, "rows_processed": int(result.get("rows", rows))}


def _processed(result: dict, rows: int) -> dict:
    return {**result, "rows_processed": int(result.get("rows", rows))}


# --- ML stages: clinical_mlops.bench.scale_ml_stages on the model the train stage registered ---------

def _open(workspace: Path):
    from clinical_mlops.bench import scale_ml_stages
    from clinical_mlops.core import warehouse
    from clinical_mlops.features.cohort import load_cohort
    from clinical_mlops.governance.policy import load_policy

    con = warehouse.connect(Path(workspace) / "warehouse.duckdb")
    scale_ml_stages.limit_memory(con, memory_limit=DUCKDB_MEMORY_LIMIT)
    return con, load_cohort(COHORT), load_policy()


def _newest_extract(con) -> str:
    return con.execute(
        "SELECT extract_id FROM raw.extracts WHERE status = 'landed' ORDER BY landed_at DESC, extract_id DESC LIMIT 1"
    ).fetchone()[0]


def _candidate(con, spec, workspace: Path):
    """The latest registered candidate, loaded from the workspace's MLflow store."""
    from clinical_mlops.scoring import champion as scoring
    from clinical_mlops.core import tracking
    from clinical_mlops.training import fit as training

    root = Path(workspace) / "mlflow"
    tracking.configure(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts")
    row = training.latest_model_version(con, spec.name, "candidate")
    ref = scoring.ModelRef(name=row["model_name"], version=str(row["model_version"]), run_id=row["mlflow_run_id"],
                           source="bench: latest candidate", model_card_sha256=None,
                           operating_threshold=float(row["operating_threshold"]))
    return scoring.load_scoring_model(ref, spec)


def drift_statistics(workspace: Path, rows: int) -> dict:
    from clinical_mlops.bench import scale_ml_stages

    con, spec, policy = _open(workspace)
    try:
        model = _candidate(con, spec, workspace)
        result = scale_ml_stages.drift_statistics(con, spec, _newest_extract(con), policy=policy, predict=model.score,
                                                  html_path=Path(workspace) / "drift.html")
    finally:
        con.close()
    return _processed(result, rows)


def fairness_aggregates(workspace: Path, rows: int) -> dict:
    from clinical_mlops.bench import scale_ml_stages

    con, spec, policy = _open(workspace)
    try:
        return _processed(scale_ml_stages.fairness_aggregates(con, spec, policy=policy), rows)
    finally:
        con.close()


def evaluation(workspace: Path, rows: int) -> dict:
    from clinical_mlops.bench import scale_ml_stages

    con, spec, _ = _open(workspace)
    try:
        return _processed(scale_ml_stages.evaluation(con, spec), rows)
    finally:
        con.close()


def batch_scoring(workspace: Path, rows: int) -> dict:
    from clinical_mlops.bench import scale_ml_stages

    con, spec, _ = _open(workspace)
    try:
        model = _candidate(con, spec, workspace)
        return _processed(scale_ml_stages.batch_scoring(con, model, _newest_extract(con)), rows)
    finally:
        con.close()


def run_stage(name: str, workspace: Path, rows: int) -> dict:
    stage = next((s for s in STAGES if s.name == name), None)
    if stage is None:
        raise SystemExit(f"unknown stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")
    module, function = stage.target.split(":")
    return getattr(importlib.import_module(module), function)(workspace, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stage")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    from clinical_mlops.core.settings import switch_off_telemetry

    switch_off_telemetry()
    args.result.write_text(json.dumps(run_stage(args.stage, args.workspace, args.rows), default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
