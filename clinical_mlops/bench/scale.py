"""Each stage of the graph at a given number of synthetic encounters, one stage per process.

Stages run on the synthetic source (``synthetic_diabetes130``) and its readmission cohort, in
order on one workspace (``--workspace``): generate the extracts, scan them once with plain DuckDB
(the yardstick, :func:`duckdb_scan`), then land,
validate, features, split, train, drift, fairness, evaluation and batch scoring. Every stage but
``generate`` is the step function its asset calls (``clinical_mlops.<domain>.steps``), with the
asset's default settings, so the figures are the product's code path without Dagster. Each call
reads what the previous stages left in the workspace: ``landing/<source>/`` (extract CSVs),
``warehouse.duckdb``, ``mlflow/`` and ``reports/``; DuckDB spills to ``duckdb_tmp/`` beyond the
memory cap of :func:`clinical_mlops.core.chunking.bound_memory`. Results are counts and
aggregates, never rows.

Run as ``python -m clinical_mlops.bench.scale STAGE --rows N --workspace DIR --result out.json``;
``clinical-mlops bench`` (:mod:`.run`) runs each stage in its own process, so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinical_mlops.bench import compare

__all__ = [
    "BENCH_PSEUDONYM_KEY",
    "COHORT",
    "ROWS_PER_EXTRACT",
    "SOURCE",
    "STAGES",
    "Stage",
    "batch_scoring",
    "drift_statistics",
    "duckdb_scan",
    "evaluation",
    "fairness_aggregates",
    "features",
    "generate",
    "land",
    "main",
    "run_stage",
    "split",
    "train",
    "validate",
]

SOURCE = "synthetic_diabetes130"
"""The source the synthetic generator's extracts land in."""
COHORT = f"{SOURCE}_readmission_30d"
BENCH_PSEUDONYM_KEY = compare.BENCH_PSEUDONYM_KEY.encode()  # the workspaces' key, as bytes
ROWS_PER_EXTRACT = 1_000_000


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Path, int], dict]
    """Takes ``(workspace, encounters)``; returns a JSON-able dict with ``rows_processed``."""


# --- the workspace --------------------------------------------------------------------------------


@contextlib.contextmanager
def _connect(workspace: Path) -> Iterator[Any]:
    """The workspace's warehouse, opened as an asset opens it, spilling to ``<workspace>/duckdb_tmp``."""
    from clinical_mlops.core import chunking, warehouse

    con = warehouse.connect(Path(workspace) / "warehouse.duckdb")
    temp = Path(workspace) / "duckdb_tmp"
    temp.mkdir(parents=True, exist_ok=True)
    chunking.bound_memory(con, temp_directory=temp, preserve_insertion_order=True)
    try:
        yield con
    finally:
        con.close()


def _tracking(workspace: Path) -> dict[str, Any]:
    root = Path(workspace) / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    return {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_root": root / "artifacts"}


def _reports(workspace: Path) -> Path:
    return Path(workspace) / "reports"


def _source():
    from clinical_mlops.sources.contract import load_source

    return load_source(SOURCE)


def _landing(workspace: Path) -> Path:
    return Path(workspace) / "landing" / SOURCE


def _spec():
    from clinical_mlops.features.cohort import load_cohort

    return load_cohort(COHORT)


def _policy():
    from clinical_mlops.governance.policy import load_policy

    return load_policy()


def _landed_extracts(workspace: Path) -> list[str]:
    with _connect(workspace) as con:
        return [row[0] for row in con.execute(
            "SELECT extract_id FROM raw.extracts WHERE source = ? AND status = 'landed' ORDER BY extract_id",
            [SOURCE]).fetchall()]


def _processed(result: dict, rows: int) -> dict:
    return {**result, "rows_processed": int(result.get("rows", rows))}


# --- the stages -----------------------------------------------------------------------------------


def generate(workspace: Path, rows: int) -> dict:
    """Write ``rows`` synthetic encounters (with the subgroup bias) as extract CSVs in ``landing/<source>/``."""
    from clinical_mlops.ingestion.synthetic import SubgroupBias, SyntheticConfig, write_synthetic_extracts

    config = SyntheticConfig(n_encounters=rows, seed=42, bias=SubgroupBias(utilisation_undercount_rate=0.5))
    paths = write_synthetic_extracts(config, _landing(workspace), rows_per_extract=ROWS_PER_EXTRACT,
                                     chunk_rows=250_000)
    return {"rows": rows, "extracts": len(paths), "bytes": sum(p.stat().st_size for p in paths),
            "rows_processed": rows}


def duckdb_scan(workspace: Path, rows: int) -> dict:
    """The yardstick of the stages: one plain DuckDB scan of the same extract files, every column read
    (as text, ``max`` of each), in memory, with the warehouse's memory cap."""
    import duckdb

    from clinical_mlops.core import chunking
    from clinical_mlops.ingestion import landing

    files = [str(p) for p in landing.list_extracts(_landing(workspace))]
    with duckdb.connect() as con:
        temp = Path(workspace) / "duckdb_tmp"
        temp.mkdir(parents=True, exist_ok=True)
        chunking.bound_memory(con, temp_directory=temp, preserve_insertion_order=False)
        read = "read_csv(?, header = true, all_varchar = true)"  # text: a "?" anywhere parses
        columns = [d[0] for d in con.execute(f"SELECT * FROM {read} LIMIT 0", [files]).description]
        aggregates = ", ".join(f'max("{c}")' for c in columns)
        scanned = con.execute(f"SELECT count(*), {aggregates} FROM {read}", [files]).fetchone()
    return {"rows": int(scanned[0]), "files": len(files), "columns": len(columns), "rows_processed": int(scanned[0])}


def land(workspace: Path, rows: int) -> dict:
    """``[source, raw_extract]`` for every extract of the source's landing folder."""
    from clinical_mlops.ingestion import landing, steps

    source, results = _source(), []
    for path in landing.list_extracts(_landing(workspace)):
        with _connect(workspace) as con:
            results.append(steps.land(con, path, source))
    return _processed({"rows": sum(r.rows_landed for r in results), "extracts": len(results),
                       "rejected": sum(r.status == "rejected" for r in results)}, rows)


def validate(workspace: Path, rows: int) -> dict:
    """``[source, validated_extract]`` for every landed extract, in arrival order."""
    from clinical_mlops.validation import steps

    source, outcomes = _source(), []
    for extract_id in _landed_extracts(workspace):
        with _connect(workspace) as con:
            outcomes.append(steps.validate(con, source, extract_id, pseudonym_key=BENCH_PSEUDONYM_KEY).outcome)
    return _processed({
        "rows": sum(o.rows_landed for o in outcomes), "rows_valid": sum(o.rows_valid for o in outcomes),
        "rows_quarantined": sum(o.rows_quarantined for o in outcomes),
        "reconciles": all(o.reconciles for o in outcomes),
    }, rows)


def features(workspace: Path, rows: int) -> dict:
    """``[cohort, encounter_features]``."""
    from clinical_mlops.features import steps

    with _connect(workspace) as con:
        step = steps.build_features(con, _spec())
    return _processed({"rows": step.build.rows_in, "rows_out": step.build.rows_out,
                       "schema_failures": sum(step.schema_check.failures.values()),
                       "rows_checked": step.schema_check.rows_checked,
                       "build_seconds": round(step.build_seconds, 2)}, rows)


def split(workspace: Path, rows: int) -> dict:
    """``[cohort, training_split]``."""
    from clinical_mlops.training import steps

    with _connect(workspace) as con:
        summary = steps.split(con, _spec()).summary
    return _processed({"rows": summary.train_rows + summary.test_rows, "train_rows": summary.train_rows,
                       "test_rows": summary.test_rows, "patient_overlap": summary.patient_overlap}, rows)


def train(workspace: Path, rows: int) -> dict:
    """``[cohort, baseline_model]`` and ``[cohort, candidate_model]`` (training rows capped, test scored whole)."""
    from clinical_mlops.training import steps

    spec, result = _spec(), {}
    for role, fit in (("baseline", steps.train_baseline), ("candidate", steps.train_candidate)):
        started = time.perf_counter()
        with _connect(workspace) as con:
            outcome = fit(con, spec, **_tracking(workspace))
        result[role] = {"seconds": round(time.perf_counter() - started, 2),
                        "train_rows_used": outcome.train_rows_used, "test_auroc": round(outcome.test_auroc, 4)}
        result.update(rows=outcome.train_rows + outcome.test_rows, train_rows_used=outcome.train_rows_used,
                      test_rows_scored=outcome.test_rows)
    return _processed(result, rows)


def drift_statistics(workspace: Path, rows: int) -> dict:
    """``[cohort, drift_report]`` for the newest extract (statistics, prediction drift, Evidently HTML)."""
    from clinical_mlops.drift import steps

    newest = _landed_extracts(workspace)[-1]
    with _connect(workspace) as con:
        step = steps.assess_drift(con, _spec(), newest, policy=_policy(), **_tracking(workspace),
                                  html_path=_reports(workspace) / COHORT / "drift" / f"{newest}.html")
    result = step.result
    return _processed({
        "rows": result.n_reference + result.n_current, "reference_rows": result.n_reference,
        "current_rows": result.n_current, "features_tested": result.features_tested,
        "features_drifted": len(result.drifted_features), "dataset_drift": result.dataset_drift,
        "prediction_drift": None if result.prediction is None else result.prediction_drift,
        "drift_run_id": step.drift_run_id, "statistics_seconds": round(step.statistics_seconds, 2),
        "prediction_seconds": None if step.prediction_seconds is None else round(step.prediction_seconds, 2),
        "evidently_seconds": None if step.html is None else round(step.html.seconds, 2),
    }, rows)


def fairness_aggregates(workspace: Path, rows: int) -> dict:
    """``[cohort, fairness_report]``: the policy audit of the candidate (binned bootstrap at scale)."""
    from clinical_mlops.fairness import steps

    with _connect(workspace) as con:
        step = steps.audit_candidate(con, _spec(), policy=_policy(), n_bootstrap=None,
                                     reports_dir=_reports(workspace), run_id="bench")
    audit = step.audit
    return _processed({
        "rows": audit.n, "groups": int(audit.groups[["slice", "group"]].drop_duplicates().shape[0]),
        "verdicts": audit.verdict_counts, "blocking_failed": audit.blocking_failed,
        "bootstrap": {"method": audit.bootstrap_method, "replicates": audit.n_bootstrap,
                      "exact_max_rows": audit.exact_max_rows, "score_bins": audit.score_bins},
        "audit_id": step.audit_id, "incidents": len(step.incidents),
    }, rows)


def evaluation(workspace: Path, rows: int) -> dict:
    """``[cohort, model_evaluation]``: both models with bootstrap CIs (binned above the exact cap)."""
    from clinical_mlops.evaluation import steps

    with _connect(workspace) as con:
        step = steps.evaluate_models(con, _spec(), reports_dir=_reports(workspace))
    result: dict = {"rows": 0, "plots": 0}
    for evaluated in step.models:
        auroc = evaluated.evaluation.overall("auroc")
        result[evaluated.role] = {"bootstrap": evaluated.evaluation.bootstrap, "auroc": round(auroc.estimate, 4),
                                  "auroc_ci": [round(auroc.lower, 4), round(auroc.upper, 4)]}
        result["rows"] = int(evaluated.evaluation.bootstrap["rows"])
        result["plots"] += len(evaluated.plot_paths)
    return _processed(result, rows)


BENCH_APPROVER = "clinical-mlops bench"


def batch_scoring(workspace: Path, rows: int) -> dict:
    """``[cohort, batch_predictions]`` for the newest extract, by the champion only.

    The scale benchmark measures speed, not the governance path (no model card, change control or
    promotion gate runs here), so before scoring it approves the latest candidate by hand, as a named
    approver (``clinical-mlops bench``) whose change is in ``audit.alias_history`` like any manual
    promotion. With no model card recorded, its predictions are not traceable to one (``traceable``
    is False): the product's graph always makes the card before promotion.
    """
    from clinical_mlops.core import tracking
    from clinical_mlops.registry import aliases
    from clinical_mlops.scoring import steps
    from clinical_mlops.training import fit
    from clinical_mlops.training.modelling import registered_model_name

    newest = _landed_extracts(workspace)[-1]
    settings = _tracking(workspace)
    with _connect(workspace) as con:
        name = registered_model_name(COHORT, "candidate")
        if aliases.current_alias(con, name, aliases.CHAMPION) is None:
            tracking.configure(settings["tracking_uri"], settings["artifact_root"])
            latest = fit.latest_model_version(con, COHORT, "candidate")
            aliases.promote(con, name, str(latest["model_version"]), actor=BENCH_APPROVER,
                            reason="benchmark only: scoring speed with a hand-approved champion",
                            policy_sha256=_policy().sha256)
        step = steps.score_batch(con, _spec(), newest, **settings)
    summary = step.summary
    return _processed({
        "rows": summary.rows_scored, "rows_excluded": summary.rows_excluded, "rows_flagged": summary.rows_flagged,
        "mean_score": round(summary.mean_score, 5), "scores_sha256": summary.scores_sha256,
        "model_source": step.model.source, "traceable": step.traceable,
    }, rows)


STAGES: tuple[Stage, ...] = (
    Stage("generate", generate),
    Stage("duckdb_scan", duckdb_scan),
    Stage("land", land),
    Stage("validate", validate),
    Stage("features", features),
    Stage("split", split),
    Stage("train", train),
    Stage("drift_statistics", drift_statistics),
    Stage("fairness_aggregates", fairness_aggregates),
    Stage("evaluation", evaluation),
    Stage("batch_scoring", batch_scoring),
)


def run_stage(name: str, workspace: Path, rows: int) -> dict:
    stage = next((s for s in STAGES if s.name == name), None)
    if stage is None:
        raise SystemExit(f"unknown stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")
    return stage.run(Path(workspace), rows)


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
