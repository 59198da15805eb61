"""The ``clinical-mlops`` command: what a user would otherwise do by hand."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from pathlib import Path

from clinical_mlops.core.settings import PROJECT_ROOT, default_paths, switch_off_telemetry

__all__ = ["UI_HINT", "build_parser", "cmd_demo", "cmd_land", "main"]

switch_off_telemetry()

UI_HINT = (
    "Dagster UI: make ui  → http://127.0.0.1:3000 (assets, lineage, checks)\n"
    "MLflow UI: started by make ui → http://127.0.0.1:5000 (runs, registered models)"
)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _prepare_extracts(
    source: Path | None, seed: int, n_encounters: int, n_extracts: int, landing_dir: Path, bias: float
) -> list[Path]:
    from clinical_mlops.ingestion import uci

    if source is None:
        from clinical_mlops.ingestion import synthetic

        injected = synthetic.SubgroupBias("race", "AfricanAmerican", utilisation_undercount_rate=bias) if bias else None
        _say(f"Generating {n_encounters:,} synthetic encounters (seed {seed}"
             + (f"; prior visits of AfricanAmerican patients under-recorded at rate {bias}" if bias else "") + ") …")
        encounters = synthetic.generate_encounters(
            synthetic.SyntheticConfig(n_encounters=n_encounters, seed=seed, bias=injected)
        )
        prefix = f"synthetic_s{seed}_n{n_encounters}_of{n_extracts}" + (f"_bias{bias:g}" if bias else "")
    else:
        _say(f"Reading the UCI extract from {source} …")
        encounters = uci.load_uci_encounters(source)
        prefix = f"uci_of{n_extracts}"
    landing_dir.mkdir(parents=True, exist_ok=True)
    return uci.write_sequential_extracts(encounters, landing_dir, n_extracts, prefix=prefix)


def _cohort_summary(metadata: dict[str, dict]) -> dict[str, dict]:
    summary: dict[str, dict] = {}
    for key, values in metadata.items():
        cohort, _, asset = key.partition("/")
        if asset in ("baseline_model", "candidate_model"):
            summary.setdefault(cohort, {})[asset] = {
                k: values[k] for k in ("registered_model", "model_version", "mlflow_run_id", "test_auroc",
                                       "operating_threshold", "train_rows", "test_rows") if k in values
            }
        elif asset == "model_evaluation":
            summary.setdefault(cohort, {})["evaluation"] = {
                k: v for k, v in values.items() if isinstance(v, (int, float, str)) and not k.endswith(("_plots", "_by_group"))
            }
    return summary


def _record(instance, outcome) -> None:
    """Write a finished run's events to the audit ledger (no daemon needed)."""
    from clinical_mlops.defs.audit.sensors import record_run

    record_run(instance, outcome.run_id)


def _record_or_warn(instance, outcome) -> None:
    """Record the run in the ledger; a known failure (disk, lock) is a warning, the run's own result stands."""
    from clinical_mlops.cli import errors as cli_errors

    try:
        _record(instance, outcome)
    except Exception as exc:
        message = cli_errors.describe(exc)
        if message is None:
            raise
        _say(f"warning: run {outcome.run_id} not recorded in the audit ledger: {message}")


def cmd_demo(args: argparse.Namespace) -> int:
    from clinical_mlops.cli import runs

    started = time.perf_counter()
    paths = default_paths()
    source = args.source.resolve() if args.source else None
    extracts = _prepare_extracts(source, args.seed, args.encounters, args.extracts, paths.landing_dir, args.bias)
    instance = runs.project_instance()
    defs = runs.load_definitions()
    summary: dict = {"source": str(source) if source else "synthetic", "seed": args.seed, "extracts": []}
    failures: list[str] = []
    stages = len(extracts) + 4
    for i, path in enumerate(extracts, 1):
        _say(f"[{i}/{stages}] Landing and validating {path.name}")
        outcome = runs.run_ingestion(defs, instance, path.name)
        _record(instance, outcome)
        raw = outcome.metadata.get("raw_encounters", {})
        valid = outcome.metadata.get("validated_encounters", {})
        summary["extracts"].append({
            "extract_id": path.name, "status": raw.get("status"), "rows_landed": raw.get("rows_landed"),
            "rows_valid": valid.get("rows_valid"), "rows_quarantined": valid.get("rows_quarantined"),
            "run_id": outcome.run_id, "failed_checks": outcome.failed_checks,
        })
        if not outcome.success or outcome.blocking_failures:
            failures.append(f"{path.name}: {outcome.error or ', '.join(outcome.blocking_failures)}")

    step = len(extracts)
    _say(f"[{step + 1}/{stages}] Features, split, models and evaluation for every cohort")
    training = runs.run_training(defs, instance)
    _record(instance, training)
    summary["training_run_id"] = training.run_id
    summary["cohorts"] = _cohort_summary(training.metadata)
    if not training.success:
        failures.append(f"training: {training.error}")
        return _finish(summary, failures, started, paths, args)

    _say(f"[{step + 2}/{stages}] Fairness audit against governance/policy.yaml")
    fairness = runs.run_job(defs, instance, "fairness_job")
    _record(instance, fairness)
    blocked = [c for c in fairness.blocking_failures if "fairness_report" in c]
    warned = [c for c in fairness.failed_checks if "fairness_report" in c and c not in blocked]
    if blocked:
        _say(f"  fairness gate failed ({', '.join(blocked)}): promotion blocked; root cause and mitigation")
    elif warned:
        _say(f"  fairness warnings ({', '.join(warned)}): root cause and mitigation for the reviewer")
    if blocked or warned:
        remediation = runs.run_job(defs, instance, "fairness_remediation_job")
        _record(instance, remediation)
        if not remediation.success:
            failures.append(f"fairness remediation: {remediation.error}")
    summary["fairness_failed_checks"] = fairness.failed_checks

    _say(f"[{step + 3}/{stages}] Change control, promotion gate and model cards")
    release = runs.run_job(defs, instance, "release_job")
    _record(instance, release)
    summary["release_failed_checks"] = release.failed_checks
    summary["promotion"] = {
        key: {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))}
        for key, values in release.metadata.items() if key.endswith("/promotion")
    }

    last = extracts[-1].name
    _say(f"[{step + 4}/{stages}] Drift of the newest extract and batch scoring with the champion")
    for job_name in ("drift_job", "scoring_job"):
        outcome = runs.run_job(defs, instance, job_name, partition_key=last)
        _record(instance, outcome)
        if not outcome.success:
            failures.append(f"{job_name}: {outcome.error}")
        summary[job_name.replace("_job", "")] = {
            key: {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))}
            for key, values in outcome.metadata.items()
        }
    summary["fairness"] = _fairness_summary(paths)
    return _finish(summary, failures, started, paths, args)


def _fairness_summary(paths) -> dict:
    from clinical_mlops.fairness import audit as fairness
    from clinical_mlops.core import warehouse
    from clinical_mlops.features.cohort import load_all_cohorts

    with contextlib.closing(warehouse.connect(paths.warehouse)) as con:
        return {spec.name: fairness.summary_for(con, spec.name) for spec in load_all_cohorts()}


def _finish(summary: dict, failures: list[str], started: float, paths, args: argparse.Namespace) -> int:
    summary["failures"] = failures
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    summary["warehouse"] = str(paths.warehouse)
    summary["mlflow_tracking_uri"] = paths.mlflow_tracking_uri
    _print_summary(summary)
    if args.summary_json:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(json.dumps(summary, indent=2, default=str))
    return 1 if failures else 0


def _print_summary(summary: dict) -> None:
    landed = sum(e["rows_landed"] or 0 for e in summary["extracts"])
    quarantined = sum(e["rows_quarantined"] or 0 for e in summary["extracts"])
    print(f"\nclinical_mlops demo — {summary['source']} — {summary['wall_seconds']} s")
    print(f"  extracts: {len(summary['extracts'])}; rows landed {landed:,}; quarantined {quarantined:,}")
    for cohort, parts in summary.get("cohorts", {}).items():
        evaluation = parts.get("evaluation", {})
        print(f"  {cohort}:")
        for role in ("baseline", "candidate"):
            model = parts.get(f"{role}_model", {})
            if not model:
                continue
            print(
                f"    {role:9s} {model['registered_model']} v{model['model_version']} (run {model['mlflow_run_id'][:8]})"
                f"  AUROC {evaluation.get(f'{role}_auroc', float('nan'))} [{evaluation.get(f'{role}_auroc_ci', '')}]"
                f"  AUPRC {evaluation.get(f'{role}_auprc', float('nan'))}  Brier {evaluation.get(f'{role}_brier', float('nan'))}"
            )
    for cohort, fair in summary.get("fairness", {}).items():
        gap = fair.get("recall_gap") or {}
        before, after = gap.get("before"), gap.get("after")
        verdicts = (fair.get("candidate") or {}).get("verdicts", {})
        line = f"  fairness {cohort}: verdicts {verdicts}"
        if before:
            line += (f"; largest recall gap {gap['slice']}={gap['group']} vs {gap['reference']}: "
                     f"{before['estimate']:+.3f} [{before['ci'][0]:+.3f}, {before['ci'][1]:+.3f}]")
        if after:
            line += f" → after mitigation {after['estimate']:+.3f} [{after['ci'][0]:+.3f}, {after['ci'][1]:+.3f}]"
        print(line)
    for key, decision in summary.get("promotion", {}).items():
        state = "PROMOTED" if decision.get("promoted") else "BLOCKED"
        print(f"  promotion {key.split('/')[0]}: {state} — {decision.get('decision', '')}")
    for failure in summary.get("failures", []):
        print(f"  FAILED: {failure}")
    print(f"  warehouse: {summary['warehouse']}\n  MLflow: {summary['mlflow_tracking_uri']}")
    print("  " + UI_HINT.replace("\n", "\n  "))


def cmd_land(args: argparse.Namespace) -> int:
    from clinical_mlops.ingestion import landing
    from clinical_mlops.cli import runs

    paths = default_paths()
    source: Path = args.path.resolve()
    if not source.is_file():
        _say(f"error: {source} is not a file")
        return 2
    target = paths.landing_dir / source.name
    paths.landing_dir.mkdir(parents=True, exist_ok=True)
    if target.exists() and landing.file_sha256(target) != landing.file_sha256(source):
        _say(f"error: a different file named {source.name} is already in the landing zone; rename the new extract")
        return 2
    if not target.exists():
        shutil.copyfile(source, target)
    instance = runs.project_instance()
    outcome = runs.run_ingestion(runs.load_definitions(), instance, target.name)
    _record_or_warn(instance, outcome)
    raw = outcome.metadata.get("raw_encounters", {})
    valid = outcome.metadata.get("validated_encounters", {})
    print(json.dumps({
        "extract_id": target.name, "status": raw.get("status"), "sha256": raw.get("sha256"),
        "rows_landed": raw.get("rows_landed"), "rows_valid": valid.get("rows_valid"),
        "rows_quarantined": valid.get("rows_quarantined"), "failed_checks": outcome.failed_checks,
        "run_id": outcome.run_id,
    }, indent=2))
    if not outcome.success or outcome.blocking_failures:
        _say(f"error: {_run_error(outcome)}")
        return 1
    for warning in outcome.failed_checks:
        _say(f"warning: check failed (non-blocking): {warning}")
    return 0


def _run_error(outcome) -> str:
    """A failed run's error on one line, without Dagster's class names; DuckDB errors name the warehouse file.

    A failed blocking check is described from its metadata (the identifier gate: the column, the kind of
    identifier and the row count, never a value); any other error is its first line.
    """
    from clinical_mlops.cli import errors as cli_errors

    if outcome.blocking_failures:
        described = cli_errors.describe_failed_checks(getattr(outcome, "check_metadata", {}), outcome.blocking_failures)
        if described:
            return described
    first = (outcome.error or "the run failed").strip().partition("\n")[0]
    if outcome.error_class and outcome.error_class.endswith(("IOException", "PermissionException")):
        return cli_errors.describe_warehouse_error(RuntimeError(first))
    return cli_errors.without_dagster_names(first) or "the run failed"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clinical-mlops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole graph on synthetic data or the UCI extract")
    demo.add_argument("--source", type=Path, help="the UCI zip or diabetic_data.csv (default: synthetic data)")
    demo.add_argument("--seed", type=int, default=42, help="synthetic data seed")
    demo.add_argument("--encounters", type=int, default=30_000, help="synthetic encounters to generate")
    demo.add_argument("--extracts", type=int, default=4, help="monthly extracts to cut the source into")
    demo.add_argument("--summary-json", type=Path, help="write the summary figures as JSON here")
    demo.add_argument(
        "--bias", type=float, default=1.0,
        help="synthetic only: share of AfricanAmerican encounters whose prior visits are under-recorded "
        "(a measurement bias the fairness gate should catch); 0 for unbiased data",
    )
    demo.set_defaults(func=cmd_demo)

    land = sub.add_parser("land", help="land one extract file and validate it")
    land.add_argument("path", type=Path)
    land.set_defaults(func=cmd_land)

    from clinical_mlops.cli import audit as cli_audit, bench as cli_bench, fairness as cli_fairness, registry as cli_registry, serving as cli_serving

    for module in (cli_fairness, cli_registry, cli_audit, cli_serving, cli_bench):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; known failure classes (disk, lock, store) end as one ``error:`` line and exit 1."""
    from clinical_mlops.cli import errors as cli_errors

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except Exception as exc:
        message = cli_errors.describe(exc)
        if message is None:
            raise
        _say(f"error: {message}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
