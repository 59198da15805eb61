"""The ``clinical-mlops`` command: what a user would otherwise do by hand."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from clinical_mlops.core.settings import default_paths, switch_off_telemetry

__all__ = ["build_parser", "cmd_demo", "cmd_land", "main"]

switch_off_telemetry()



def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
    """The whole governed graph (see :mod:`clinical_mlops.cli.demo`)."""
    from clinical_mlops.cli import demo

    return demo.cmd_demo(args)


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
    demo.add_argument("--extracts", type=int, default=4,
                      help="extracts: all but the last train the models, the last arrives after release")
    demo.add_argument("--summary-json", type=Path, help="write the summary figures as JSON here")
    demo.add_argument(
        "--bias", type=float, default=1.0,
        help="synthetic only: share of AfricanAmerican encounters whose prior visits are under-recorded "
        "(counts not recorded, history not linked: a measurement bias the fairness gate should catch); "
        "0 for unbiased data",
    )
    demo.add_argument(
        "--shift", type=float, default=1.0,
        help="synthetic only: covariate shift of the extract that arrives after release (0 = none, 1 = strong)",
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
