"""Commands for real use, on a hospital's own extracts: ``sources``, ``land FILE --source NAME`` and
``run [--source NAME] [--cohort NAME]`` (everything downstream of what has landed, no data generated).

Every command first loads every source contract and cohort file: a malformed one is one line naming
the file and the field, exit 2, and nothing is landed or run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
from pathlib import Path

from clinical_mlops.cli.preflight import preflight, resolve_source
from clinical_mlops.core.settings import default_paths

__all__ = ["cmd_land", "cmd_run", "cmd_sources", "land_file", "register"]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _landed(con, source: str) -> list[dict]:
    from clinical_mlops.core.warehouse import table_exists

    if not table_exists(con, "raw.extracts"):
        return []
    cursor = con.execute(
        "SELECT extract_id, status, rows_landed, file_rows, contract_sha256, validated_contract_sha256, landed_at "
        "FROM raw.extracts WHERE source = ? ORDER BY landed_at, extract_id", [source])
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]


def _counts(con, source: str) -> dict:
    from clinical_mlops.core.warehouse import scalar, table_exists
    from clinical_mlops.sources import tables

    valid = int(scalar(con, f"SELECT count(*) FROM {tables.staging_table(source)}")) \
        if table_exists(con, f"staging.{source}") else 0
    quarantined = int(scalar(con, f"SELECT count(*) FROM {tables.quarantine_table(source)}")) \
        if table_exists(con, f"staging.{source}__quarantine") else 0
    return {"rows_valid": valid, "rows_quarantined": quarantined}


def cmd_sources(args: argparse.Namespace) -> int:
    """Each source: contract version, cohorts, extracts landed and their row counts."""
    from clinical_mlops.core import warehouse

    checked = preflight()
    if checked.error:
        _say(f"error: {checked.error}")
        return 2
    paths = default_paths()
    rows = []
    con = warehouse.connect(paths.warehouse, read_only=True) if paths.warehouse.exists() else None
    with contextlib.closing(con) if con is not None else contextlib.nullcontext():
        for name, source in checked.sources.items():
            landed = _landed(con, name) if con is not None else []
            rows.append({
                "source": name, "contract": str(source.path), "contract_sha256": source.sha256,
                "cohorts": [spec.name for spec in checked.cohorts_of(name)],
                "extracts_landed": sum(1 for e in landed if e["status"] == "landed"),
                "extracts_refused": sum(1 for e in landed if e["status"] != "landed"),
                "rows_landed": sum(int(e["rows_landed"] or 0) for e in landed),
                **(_counts(con, name) if con is not None else {"rows_valid": 0, "rows_quarantined": 0}),
                "stale_validations": sum(1 for e in landed if e["status"] == "landed"
                                         and e["validated_contract_sha256"] != source.sha256),
            })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['source']}  contract {row['contract_sha256'][:12]}  cohorts: {', '.join(row['cohorts']) or 'none'}")
        print(f"  {row['extracts_landed']} extract(s) landed ({row['extracts_refused']} refused): "
              f"{row['rows_landed']:,} rows landed, {row['rows_valid']:,} valid, {row['rows_quarantined']:,} quarantined"
              + (f"; {row['stale_validations']} validated under an older contract (run `clinical-mlops run "
                 f"--source {row['source']}`)" if row["stale_validations"] else ""))
    return 0


def land_file(path: Path, source):
    """Copy ``path`` into the source's landing folder (refusing a different file of the same name) and run
    ``ingestion_job_<source>`` on it (from :func:`~clinical_mlops.cli.runs.ingestion_definitions`: the same job,
    without loading the rest of the graph). Returns the run outcome, or a one-line error string."""
    from clinical_mlops.cli import runs
    from clinical_mlops.ingestion import landing

    folder = default_paths().landing_dir / source.name
    target = folder / path.name
    folder.mkdir(parents=True, exist_ok=True)
    if target.exists() and landing.file_sha256(target) != landing.file_sha256(path):
        return f"a different file named {path.name} is already in the landing folder of {source.name}; rename it"
    if not target.exists():
        shutil.copyfile(path, target)
    instance = runs.project_instance()
    return runs.run_ingestion(runs.ingestion_definitions(source.name), instance, source.name, target.name), instance


def cmd_land(args: argparse.Namespace) -> int:
    """``land FILE [--source NAME]``: land one extract into its source and validate it against the contract."""
    from clinical_mlops.cli import errors, runs

    path: Path = args.path.resolve()
    if not path.is_file():
        _say(f"error: {path} is not a file")
        return 2
    checked = preflight()
    if checked.error:
        _say(f"error: {checked.error}")
        return 2
    try:
        source = resolve_source(checked, path, args.source)
    except ValueError as error:
        _say(f"error: {error}")
        return 2
    landed = land_file(path, source)
    if isinstance(landed, str):
        _say(f"error: {landed}")
        return 2
    outcome, instance = landed
    runs.record_or_warn(instance, outcome)
    raw = outcome.metadata.get(f"{source.name}/raw_extract", {})
    valid = outcome.metadata.get(f"{source.name}/validated_extract", {})
    print(json.dumps({
        "source": source.name, "contract_sha256": source.sha256,
        "extract_id": path.name, "status": raw.get("status"), "sha256": raw.get("sha256"),
        "rows_landed": raw.get("rows_landed"), "rows_valid": valid.get("rows_valid"),
        "rows_quarantined": valid.get("rows_quarantined"), "failed_checks": outcome.failed_checks,
        "run_id": outcome.run_id,
    }, indent=2))
    if not outcome.success or outcome.blocking_failures:
        _say(f"error: {errors.run_error(outcome)}")
        return 1
    for warning in outcome.failed_checks:
        _say(f"warning: check failed (non-blocking): {warning}")
    print(f"next: clinical-mlops run --source {source.name}", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: everything downstream of what has landed, per source (see :func:`clinical_mlops.cli.demo.run_source`)."""
    from clinical_mlops.cli import demo
    from clinical_mlops.core import warehouse

    checked = preflight()
    if checked.error:
        _say(f"error: {checked.error}")
        return 2
    if args.source is not None and args.source not in checked.sources:
        _say(f"error: no source named {args.source!r} (sources: {', '.join(checked.sources)})")
        return 2
    names = {spec.name: spec for spec in checked.cohorts}
    if args.cohort is not None:
        if args.cohort not in names:
            _say(f"error: no cohort named {args.cohort!r} (cohorts: {', '.join(names)})")
            return 2
        if args.source is not None and names[args.cohort].source != args.source:
            _say(f"error: cohort {args.cohort} is built on source {names[args.cohort].source}, not {args.source}")
            return 2
    paths = default_paths()
    if not paths.warehouse.exists():
        _say("error: nothing has landed yet: land an extract first with `clinical-mlops land FILE --source NAME`")
        return 2
    with contextlib.closing(warehouse.connect(paths.warehouse, read_only=True)) as con:
        landed = {name: [e for e in _landed(con, name) if e["status"] == "landed"] for name in checked.sources}
    wanted = [args.source] if args.source else [n for n, extracts in landed.items() if extracts]
    if args.cohort is not None:
        wanted = [names[args.cohort].source]
    if not any(landed[n] for n in wanted):
        _say(f"error: nothing landed for {', '.join(wanted) or 'any source'}: land an extract first with "
             "`clinical-mlops land FILE --source NAME`")
        return 2
    return demo.run_landed(args, checked, {n: landed[n] for n in wanted if landed[n]})


def register(sub: argparse._SubParsersAction) -> None:
    """``sources``, ``land`` and ``run``."""
    sources = sub.add_parser("sources", help="each source contract: its hash, cohorts, extracts landed and rows")
    sources.add_argument("--json", action="store_true", help="print JSON")
    sources.set_defaults(func=cmd_sources)

    land = sub.add_parser("land", help="land one extract file into its source and validate it against the contract")
    land.add_argument("path", type=Path)
    land.add_argument("--source", help="the source contract (default: the one whose header the file matches)")
    land.set_defaults(func=cmd_land)

    run = sub.add_parser("run", help="materialize everything downstream of what has landed (no data generated)")
    run.add_argument("--source", help="only this source's cohorts")
    run.add_argument("--cohort", help="only this cohort (its source's extracts)")
    run.add_argument("--summary-json", type=Path, help="write the summary figures as JSON here")
    run.set_defaults(func=cmd_run)
