"""``clinical-mlops audit …``: verify the ledger, query lineage, export a bundle, replay a model.

Every command reads the project's warehouse, MLflow store and ledger (``CLINICAL_MLOPS_*``
environment variables, defaults under ``data/``) and, except ``record``, opens the warehouse
read-only. Commands that produce evidence (``export``, ``replay``, ``card``) also append what
they did to the ledger.

    clinical-mlops audit verify                         exit 1 and the first bad entry if tampered
    clinical-mlops audit lineage --model NAME --version N
    clinical-mlops audit lineage --extract EXTRACT_ID_OR_SHA256
    clinical-mlops audit export --model NAME --version N --out PATH [--replay]
    clinical-mlops audit replay --model NAME --version N
    clinical-mlops audit card --model NAME --version N
    clinical-mlops audit record                         governance rows + DuckDB mirror, now
    clinical-mlops audit amend --seq N --set key=value --reason TEXT
    clinical-mlops audit reseal --reason TEXT           after an interrupted write (audited)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from clinical_mlops.core.settings import default_paths, switch_off_telemetry

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "cmd_amend",
    "cmd_card",
    "cmd_export",
    "cmd_lineage",
    "cmd_record",
    "cmd_replay",
    "cmd_reseal",
    "cmd_verify",
    "main",
    "register",
]

switch_off_telemetry()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _warehouse_path(args: argparse.Namespace) -> Path:
    return Path(args.warehouse) if getattr(args, "warehouse", None) else default_paths().warehouse


def _ledger_path(args: argparse.Namespace) -> Path:
    from clinical_mlops.audit import ledger

    return Path(args.ledger) if getattr(args, "ledger", None) else ledger.default_ledger_path(_warehouse_path(args))


@contextlib.contextmanager
def _warehouse(args: argparse.Namespace, *, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    import duckdb

    from clinical_mlops.core import warehouse

    path = _warehouse_path(args)
    if not path.exists():
        raise SystemExit(f"error: no warehouse at {path} (run `clinical-mlops demo` first, or pass --warehouse)")
    try:
        con = warehouse.connect(path, read_only=not write)
    except duckdb.Error as exc:
        from clinical_mlops.cli.errors import describe_warehouse_error

        problem = describe_warehouse_error(exc).removeprefix(f"the warehouse {default_paths().warehouse}: ")
        raise SystemExit(f"error: cannot open the warehouse {path}: {problem}") from None
    try:
        yield con
    finally:
        con.close()


def _print(args: argparse.Namespace, data: dict, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


# ---------------------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    from clinical_mlops.audit import ledger

    import duckdb

    path = _ledger_path(args)
    con = None
    note = ""
    if not args.no_mirror and _warehouse_path(args).exists():
        try:
            con = duckdb.connect(str(_warehouse_path(args)), read_only=True)
        except duckdb.Error:
            note = " (warehouse busy: DuckDB mirror not compared)"
    try:
        result = ledger.verify(path, con=con)
    finally:
        if con is not None:
            con.close()
    _print(args, {**result.as_dict(), "ledger": str(path)}, f"{result.summary()}{note}\n  ledger: {path}")
    return 0 if result.ok else 1


def cmd_lineage(args: argparse.Namespace) -> int:
    from clinical_mlops.audit import lineage

    with _warehouse(args) as con:
        if args.extract:
            models = lineage.models_using_extract(con, args.extract)
            lines = [f"models trained on {args.extract}: {len(models)}"]
            lines += [f"  {m['model_name']} v{m['model_version']} ({m['role']}, {m['registered_at'][:19]}) "
                      f"extract {m['extract_id']} sha256 {m['sha256'][:12]}… commit {m['git_commit'][:12]}"
                      for m in models]
            _print(args, {"extract": args.extract, "models": models}, "\n".join(lines))
            return 0 if models else 2
        if not (args.model and args.version):
            _say("error: give --model and --version, or --extract")
            return 2
        try:
            record = lineage.model_lineage(con, args.model, args.version)
        except LookupError as exc:
            _say(f"error: {exc}")
            return 2
    lines = [
        f"{record.model_name} v{record.model_version} ({record.role}, cohort {record.cohort}), "
        f"registered {record.registered_at[:19]} UTC, MLflow run {record.mlflow_run_id}",
        f"  code: git commit {record.git_commit}{' (dirty)' if record.git_dirty else ''}; "
        f"uv.lock sha256 {record.lock_sha256}; cohort spec sha256 {record.cohort_spec_sha256}",
        f"  {record.algorithm} {json.dumps({k: v for k, v in record.params.items() if k != 'algorithm'}, sort_keys=True)}",
        f"  split: train {record.train_rows} rows (ids {record.train_ids_sha256[:12]}…), "
        f"test {record.test_rows} rows (ids {record.test_ids_sha256[:12]}…)",
        "  extracts:",
        *[f"    {e.extract_id}  sha256 {e.sha256}  {'unchanged' if e.unchanged else 'CHANGED OR MISSING'}"
          for e in record.extracts],
        "  dagster assets: " + " → ".join(dict.fromkeys(a.split("[")[0] for a in record.assets)),
    ]
    _print(args, record.as_dict(), "\n".join(lines))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from clinical_mlops.audit import bundle as audit_bundle

    paths = default_paths()
    with _warehouse(args) as con:
        try:
            result = audit_bundle.export(
                con, args.model, args.version, args.out, ledger_path=_ledger_path(args),
                tracking_uri=paths.mlflow_tracking_uri, artifact_root=paths.mlflow_artifact_root,
                reports_dir=paths.reports_dir, replay=args.replay,
            )
        except (LookupError, FileExistsError) as exc:
            _say(f"error: {exc}")
            return 2
    lines = [
        f"audit bundle written: {result.path}",
        f"  {len(result.files)} files; manifest sha256 {result.manifest_sha256}",
        f"  ledger verification: {'OK' if result.ledger_ok else 'FAILED'}; trail: {result.trail_entries} entries",
        f"  open {result.path / 'index.html'}; verify with: python {result.path / 'verify_bundle.py'}",
        *[f"  not included: {item}" for item in result.absent],
    ]
    _print(args, {"path": str(result.path), "manifest_sha256": result.manifest_sha256, "files": len(result.files),
                  "ledger_ok": result.ledger_ok, "trail_entries": result.trail_entries, "absent": result.absent},
           "\n".join(lines))
    return 0 if result.ledger_ok else 1


def cmd_replay(args: argparse.Namespace) -> int:
    from clinical_mlops.audit import ledger

    from clinical_mlops.audit import events as audit_events, replay

    paths = default_paths()
    with _warehouse(args) as con:
        try:
            report = replay.replay(con, args.model, args.version, tracking_uri=paths.mlflow_tracking_uri,
                                   artifact_root=paths.mlflow_artifact_root)
        except LookupError as exc:
            _say(f"error: {exc}")
            return 2
    if not args.no_record:
        ledger.append(
            _ledger_path(args), event_type=audit_events.EVENT_REPLAY,
            subject=f"model:{report.model_name}/{report.model_version}",
            payload={"model_name": report.model_name, "model_version": report.model_version,
                     "identical": report.identical, "predictions_compared": report.predictions_compared,
                     "predictions_differing": report.predictions_differing,
                     "checks": {c.name: c.ok for c in report.checks}, "parameters_sha256": report.parameters_sha256,
                     "environment_differences": report.environment},
        )
    _print(args, report.as_dict(), report.to_markdown())
    from clinical_mlops.core import tracking

    tracking.configure(paths.mlflow_tracking_uri, paths.mlflow_artifact_root)
    problem = tracking.model_artifact_problem(report.model_name, report.model_version)
    if problem:
        _say(f"error: {problem}; the replay could not compare the registered model itself")
        return 1
    return 0 if report.identical else 1


def cmd_card(args: argparse.Namespace) -> int:
    from clinical_mlops.audit import model_card

    paths = default_paths()
    with _warehouse(args) as con:
        try:
            card = model_card.build_model_card(con, args.model, args.version)
        except LookupError as exc:
            _say(f"error: {exc}")
            return 2
    folder = paths.reports_dir / card.cohort / "model_cards" / f"{card.model_name}_v{card.model_version}"
    written = model_card.write_model_card(card, folder)
    entry = model_card.record_model_card(card, written, ledger_path=_ledger_path(args),
                                         tracking_uri=paths.mlflow_tracking_uri,
                                         artifact_root=paths.mlflow_artifact_root)
    _print(args, {"model_card_sha256": card.sha256, "tripod_report_sha256": card.tripod_sha256,
                  "files": {k: str(v) for k, v in written.items()}, "ledger_seq": entry.seq if entry else None},
           f"model card {card.sha256}\n  " + "\n  ".join(str(p) for p in written.values()))
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from clinical_mlops.audit import events as audit_events, lineage

    with _warehouse(args, write=True) as con:
        outcome = audit_events.record_governance(con, _ledger_path(args))
        lineage.create_views(con)
    _print(args, outcome.__dict__, f"{outcome.appended} governance row(s) recorded; {outcome.mirrored} entries mirrored")
    return 0


def _parse_assignment(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def cmd_amend(args: argparse.Namespace) -> int:
    from clinical_mlops.audit import ledger

    entry = ledger.amend(_ledger_path(args), args.seq, dict(args.set), reason=args.reason)
    _print(args, entry.as_dict(), f"entry {entry.seq} amends entry {args.seq}: prior value "
           f"{json.dumps(entry.payload['prior_value'])} → {json.dumps(entry.payload['new_value'])}")
    return 0


def cmd_reseal(args: argparse.Namespace) -> int:
    from clinical_mlops.audit import ledger

    try:
        entry = ledger.reseal(_ledger_path(args), reason=args.reason)
    except ledger.LedgerIntegrityError as exc:
        _say(f"error: {exc}")
        return 1
    _print(args, entry.as_dict(), f"head re-signed; recorded as entry {entry.seq}: {json.dumps(entry.payload)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``audit`` and its subcommands to the ``clinical-mlops`` parser."""
    audit = subparsers.add_parser("audit", help="audit ledger, lineage, bundle export, replay, model cards",
                                  description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = audit.add_subparsers(dest="audit_command", required=True)

    def command(name: str, help_text: str, func) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text)
        parser.add_argument("--ledger", help="ledger file (default: $CLINICAL_MLOPS_LEDGER or data/audit/ledger.jsonl)")
        parser.add_argument("--warehouse", help="DuckDB warehouse (default: $CLINICAL_MLOPS_WAREHOUSE)")
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.set_defaults(func=func)
        return parser

    def model_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
        parser.add_argument("--model", required=required, help="registered model name, e.g. readmission_30d_candidate")
        parser.add_argument("--version", required=required, help="registered version number, or 'latest'")

    verify = command("verify", "check the ledger's hash chain, signed head and DuckDB mirror", cmd_verify)
    verify.add_argument("--no-mirror", action="store_true", help="do not compare with the DuckDB mirror")

    lineage_parser = command("lineage", "which extracts and code trained a model; which models used an extract",
                             cmd_lineage)
    model_args(lineage_parser, required=False)
    lineage_parser.add_argument("--extract", help="extract id or sha256: list the models trained on it")

    export = command("export", "write a self-contained, self-verifying audit bundle", cmd_export)
    model_args(export)
    export.add_argument("--out", type=Path, required=True, help="new folder for the bundle")
    export.add_argument("--replay", action="store_true", help="also rebuild the model and include the replay report")

    replay_parser = command("replay", "rebuild a model from its recorded inputs and compare", cmd_replay)
    model_args(replay_parser)
    replay_parser.add_argument("--no-record", action="store_true", help="do not append the result to the ledger")

    card = command("card", "generate and record the model card and TRIPOD+AI report", cmd_card)
    model_args(card)

    command("record", "record governance rows in the ledger and refresh the DuckDB mirror now", cmd_record)

    amend = command("amend", "correct a ledger entry by appending an amendment with the prior value", cmd_amend)
    amend.add_argument("--seq", type=int, required=True, help="entry to amend")
    amend.add_argument("--set", type=_parse_assignment, action="append", required=True, metavar="KEY=VALUE",
                       help="payload field and its corrected value (JSON or text); repeatable")
    amend.add_argument("--reason", required=True, help="why the entry is corrected")

    reseal = command("reseal", "re-sign the head after an interrupted write (recorded in the ledger)", cmd_reseal)
    reseal.add_argument("--reason", required=True)


def main(argv: list[str] | None = None) -> int:
    """Run the audit commands on their own (``python -m clinical_mlops.cli.audit verify``)."""
    parser = argparse.ArgumentParser(prog="clinical-mlops")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
