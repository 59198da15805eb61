"""Registry commands: promote and roll back champions by hand, and ask who was champion when.

    clinical-mlops promote --model NAME --version N --approver WHO --reason TEXT
    clinical-mlops rollback --model NAME [--approver WHO] [--reason TEXT]
    clinical-mlops champion --model NAME [--at ISO-TIME]
    clinical-mlops alias-history --model NAME [--json]

A manual promotion is an approval (21 CFR 11.50): the approver, the UTC time and the meaning
("approved version N as champion") are recorded in ``audit.alias_history``, and a row in
``audit.promotion_decisions`` records it as a manual decision beside the gate's latest verdict on
that version, if any — a manual override of a failed gate stays visible. Every command prints
JSON on stdout; errors go to stderr with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime

from clinical_mlops.core.settings import default_paths, switch_off_telemetry

__all__ = ["cmd_alias_history", "cmd_champion", "cmd_promote", "cmd_rollback", "register"]

switch_off_telemetry()


def _err(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 1


def _connect(read_only: bool):
    from clinical_mlops.core import tracking, warehouse

    paths = default_paths()
    tracking.configure(paths.mlflow_tracking_uri, paths.mlflow_artifact_root)
    if read_only and not paths.warehouse.exists():
        raise FileNotFoundError(f"no warehouse at {paths.warehouse}: run the pipeline first")
    return warehouse.connect(paths.warehouse, read_only=read_only)


def _cohort_of(con, model: str) -> str:
    rows = con.execute("SELECT DISTINCT cohort FROM ml.model_versions WHERE model_name = ?", [model]).fetchall()
    return rows[0][0] if rows else model.rsplit("_", 1)[0]


def _open(read_only: bool):
    import duckdb

    try:
        return _connect(read_only), None
    except duckdb.IOException as exc:
        from clinical_mlops.cli.errors import describe_warehouse_error

        return None, f"cannot open {describe_warehouse_error(exc).removeprefix('the ')}"
    except FileNotFoundError as exc:
        return None, str(exc)


def _policy_and_writer(args: argparse.Namespace):
    """(policy, writable warehouse connection, None), or (None, None, the problem)."""
    from clinical_mlops.governance.policy import PolicyError, load_policy

    try:
        policy = load_policy(args.policy) if args.policy else load_policy()
    except PolicyError as exc:
        return None, None, str(exc)
    con, problem = _open(read_only=False)
    return (policy, con, None) if con is not None else (None, None, problem)


def cmd_promote(args: argparse.Namespace) -> int:
    from clinical_mlops.registry import change_control, aliases as registry

    policy, con, problem = _policy_and_writer(args)
    if problem:
        return _err(problem)
    try:
        previous = registry.current_alias(con, args.model, registry.CHAMPION)
        reason = args.reason.strip()
        try:
            change = registry.promote(
                con, args.model, str(args.version), actor=args.approver, reason=reason,
                policy_sha256=policy.sha256,
                meaning=f"manual promotion: {args.approver} approved version {args.version} as champion for clinical use",
            )
        except registry.RegistryError as exc:
            return _err(str(exc))
        if change is None:
            print(json.dumps({"model": args.model, "champion": str(args.version), "changed": False,
                              "message": "already the champion; nothing recorded"}, indent=2))
            return 0
        gate = _latest_gate(con, args.model, str(args.version))
        change_control.record_decision(
            con, cohort=_cohort_of(con, args.model), model_name=args.model, challenger_version=str(args.version),
            champion_version=previous, mode="manual", passed=None if gate is None else gate["gate_passed"],
            promoted=True, modification_kinds=[] if gate is None else json.loads(gate["modification_kinds_json"]),
            criteria_json=json.dumps({"manual_approval": True, "gate_report_id": None if gate is None else gate["report_id"]}),
            reason=reason, actor=args.approver, policy_sha256=policy.sha256, policy_version=policy.version,
            report_id=None if gate is None else gate["report_id"],
        )
        print(json.dumps({
            **change.as_dict(), "changed": True,
            "gate": None if gate is None else {"report_id": gate["report_id"], "passed": gate["gate_passed"]},
        }, indent=2, default=str))
        if gate is not None and not gate["gate_passed"]:
            print(f"warning: the promotion gate had blocked version {args.version}; recorded as a manual override",
                  file=sys.stderr)
        return 0
    finally:
        con.close()


def _latest_gate(con, model: str, version: str) -> dict | None:
    from clinical_mlops.core.warehouse import table_exists

    if not table_exists(con, "audit.change_control_reports"):
        return None
    cursor = con.execute(
        """SELECT report_id, gate_passed, modification_kinds_json FROM audit.change_control_reports
           WHERE model_name = ? AND challenger_version = ? ORDER BY created_at DESC LIMIT 1""",
        [model, version],
    )
    rows = cursor.fetchall()
    return dict(zip([d[0] for d in cursor.description], rows[0])) if rows else None


def cmd_rollback(args: argparse.Namespace) -> int:
    from clinical_mlops.registry import aliases as registry

    policy, con, problem = _policy_and_writer(args)
    if problem:
        return _err(problem)
    try:
        change = registry.rollback(
            con, args.model, actor=args.approver or f"cli:{getpass.getuser()}",
            reason=args.reason or "rollback requested from the command line", policy_sha256=policy.sha256,
        )
    except registry.RegistryError as exc:
        return _err(str(exc))
    finally:
        con.close()
    print(json.dumps({**change.as_dict(), "changed": True}, indent=2, default=str))
    return 0


def _parse_time(text: str) -> datetime:
    """ISO-8601; a time without an offset is taken as UTC; a trailing Z is accepted."""
    return datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))


def cmd_champion(args: argparse.Namespace) -> int:
    from clinical_mlops.registry import aliases as registry


    try:
        at = _parse_time(args.at) if args.at else None
    except ValueError:
        return _err(f"--at {args.at!r} is not an ISO-8601 time (e.g. 2026-11-03T14:00:00Z)")
    con, problem = _open(read_only=True)
    if con is None:
        return _err(problem)
    try:
        moment = registry.to_utc_naive(at) if at else datetime.now(UTC).replace(tzinfo=None)
        version = registry.champion_at(con, args.model, moment)
        out = {"model": args.model, "at": moment.isoformat() + "Z", "champion": version}
        if at is None:
            out["mlflow_alias"] = registry.mlflow_aliases(args.model).get(registry.CHAMPION)
            out["inconsistencies"] = registry.inconsistencies(con, args.model)
    finally:
        con.close()
    print(json.dumps(out, indent=2))
    return 0


def cmd_alias_history(args: argparse.Namespace) -> int:
    from clinical_mlops.registry import aliases as registry


    con, problem = _open(read_only=True)
    if con is None:
        return _err(problem)
    try:
        changes = registry.history(con, args.model)
    finally:
        con.close()
    if args.json:
        print(json.dumps([c.as_dict() for c in changes], indent=2, default=str))
        return 0
    if not changes:
        print(f"no alias changes recorded for {args.model}")
        return 0
    print(f"{'changed_at (UTC)':26s} {'alias':10s} {'action':8s} {'version':>7s} {'previous':>8s}  actor — reason")
    for c in changes:
        print(f"{c.changed_at.isoformat():26s} {c.alias:10s} {c.action:8s} {c.version or '—':>7s} "
              f"{c.previous_version or '—':>8s}  {c.actor} — {c.reason}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``promote``, ``rollback``, ``champion`` and ``alias-history`` to the ``clinical-mlops`` command."""
    promote = subparsers.add_parser("promote", help="make a registered version the champion (manual approval)")
    promote.add_argument("--model", required=True, help="registered model, e.g. readmission_30d_candidate")
    promote.add_argument("--version", required=True, help="the version to promote")
    promote.add_argument("--approver", required=True, help="who approves (recorded as the signer)")
    promote.add_argument("--reason", required=True, help="why (recorded with the approval)")
    promote.add_argument("--policy", help="governance policy file (default: governance/policy.yaml)")
    promote.set_defaults(func=cmd_promote)

    rollback = subparsers.add_parser("rollback", help="restore the previous champion")
    rollback.add_argument("--model", required=True)
    rollback.add_argument("--approver", help="who decides (default: cli:<login name>)")
    rollback.add_argument("--reason", help="why")
    rollback.add_argument("--policy", help="governance policy file (default: governance/policy.yaml)")
    rollback.set_defaults(func=cmd_rollback)

    champion = subparsers.add_parser("champion", help="which version is (or was, --at) the champion")
    champion.add_argument("--model", required=True)
    champion.add_argument("--at", help="ISO-8601 time; without an offset it is UTC (default: now)")
    champion.set_defaults(func=cmd_champion)

    history = subparsers.add_parser("alias-history", help="every recorded alias change of a model")
    history.add_argument("--model", required=True)
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")
    history.set_defaults(func=cmd_alias_history)
