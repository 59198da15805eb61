"""Registry commands: waive missing evidence, promote and roll back champions by hand, ask who was champion when.

    clinical-mlops waive --cohort C --model NAME --version N --criterion NAME --approver WHO --reason TEXT [--expires YYYY-MM-DD]
    clinical-mlops promote --model NAME --version N --approver WHO --reason TEXT [--waive CRITERION ...]
    clinical-mlops release
    clinical-mlops rollback --model NAME [--approver WHO] [--reason TEXT]
    clinical-mlops champion --model NAME [--at ISO-TIME]
    clinical-mlops alias-history --model NAME [--json]

Both ``waive`` and ``promote`` judge the version's latest change-control report under the policy
in force (:func:`clinical_mlops.registry.change_control.decide`): a waiver covers a criterion
whose evidence is insufficient, never one that failed; a manual promotion is refused while any
criterion fails or lacks evidence no waiver covers (``--waive`` records those waivers in the same
command). A manual promotion is an approval (21 CFR 11.50): the approver, the UTC time and the
meaning are recorded in ``audit.alias_history``, and ``audit.promotion_decisions`` records it as a
manual decision with the waivers it relied on. ``release`` re-runs change control and the
promotion gate. Every command prints JSON on stdout; errors are one line on stderr with a
non-zero exit code.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime

from clinical_mlops.core.settings import default_paths, switch_off_telemetry

__all__ = ["cmd_alias_history", "cmd_champion", "cmd_promote", "cmd_release", "cmd_rollback", "cmd_waive", "register"]

RELEASE_HINT = "clinical-mlops release"
"""Re-runs change control and the promotion gate (the release job) so a waiver takes effect."""

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


def _judged(con, policy, cohort: str, model: str, version: str, extra: dict | None = None):
    """(report, decision) of the version's latest change-control report, or (None, the problem)."""
    from clinical_mlops.core.steps import StepError
    from clinical_mlops.registry import change_control, steps

    stored = change_control.latest_report(con, cohort, model)
    if stored is None or stored[1].challenger.version != str(version):
        return None, (f"no change-control report for {model} v{version}: run the release first ({RELEASE_HINT})")
    report = stored[1]
    try:
        steps.check_report_current(con, report, policy)
    except StepError as exc:
        return None, str(exc).replace("rematerialize change_control_report", f"re-run the release ({RELEASE_HINT})")
    return (report, steps.decide_now(con, report, policy, extra_waivers=extra)), None


def _waivable(decision, criterion: str, label: str) -> str | None:
    """Why ``criterion`` cannot be waived for this decision, or None when it can."""
    from clinical_mlops.core.evidence import FAIL, PASS

    found = next((c for c in decision.criteria if c.name == criterion), None)
    if found is None:
        names = ", ".join(c.name for c in decision.criteria) or "none"
        return f"{label} has no criterion {criterion!r} (its criteria: {names})"
    if found.status == FAIL:
        return f"refused: {criterion} failed for {label} ({found.reason}); a waiver covers missing evidence, never a failure"
    if found.status == PASS:
        return f"refused: {criterion} is not insufficient evidence for {label} (it passes); nothing to waive"
    if found.resolution != "waiver":
        return f"refused: {criterion} for {label} needs evidence or review a waiver cannot replace ({found.reason})"
    return None


def _expiry(text: str | None) -> datetime | None:
    """``YYYY-MM-DD``: the waiver holds through that day (UTC)."""
    from datetime import timedelta

    if not text:
        return None
    return datetime.strptime(text.strip(), "%Y-%m-%d") + timedelta(days=1)


def _record_waiver(con, policy, report, decision, criterion: str, approver: str, reason: str, expires):
    from clinical_mlops.governance import waivers

    found = next(c for c in decision.criteria if c.name == criterion)
    return waivers.record_waiver(
        con, cohort=report.cohort, model_name=report.challenger.name, model_version=report.challenger.version,
        criterion=criterion, missing_evidence=[found.reason], approved_by=approver, reason=reason,
        policy_sha256=policy.sha256, expires_at=expires)


def cmd_waive(args: argparse.Namespace) -> int:
    from clinical_mlops.governance.waivers import WaiverError

    try:
        expires = _expiry(args.expires)
    except ValueError:
        return _err(f"--expires {args.expires!r} is not a date (YYYY-MM-DD)")
    policy, con, problem = _policy_and_writer(args)
    if problem:
        return _err(problem)
    try:
        label = f"{args.model} v{args.version}"
        judged, problem = _judged(con, policy, args.cohort, args.model, str(args.version))
        if problem:
            return _err(problem)
        report, decision = judged
        problem = _waivable(decision, args.criterion, label)
        if problem:
            return _err(problem)
        try:
            waiver = _record_waiver(con, policy, report, decision, args.criterion, args.approver, args.reason, expires)
        except WaiverError as exc:
            return _err(str(exc))
        from clinical_mlops.registry import steps

        after = steps.decide_now(con, report, policy)
        nxt = (RELEASE_HINT + " (change control and the promotion gate run again and promote it)"
               if after.passed else after.next_command or RELEASE_HINT)
        print(json.dumps({**waiver.as_dict(), "decision_now": after.status, "next": nxt}, indent=2))
        print(f"next: {nxt}", file=sys.stderr)
        return 0
    finally:
        con.close()


def cmd_promote(args: argparse.Namespace) -> int:
    from clinical_mlops.governance.waivers import Waiver, WaiverError
    from clinical_mlops.registry import change_control, aliases as registry

    try:
        expires = _expiry(getattr(args, "expires", None))
    except ValueError:
        return _err(f"--expires {args.expires!r} is not a date (YYYY-MM-DD)")
    policy, con, problem = _policy_and_writer(args)
    if problem:
        return _err(problem)
    try:
        version, reason, label = str(args.version), args.reason.strip(), f"{args.model} v{args.version}"
        cohort = _cohort_of(con, args.model)
        judged, problem = _judged(con, policy, cohort, args.model, version)
        if problem:
            return _err(problem)
        report, decision = judged
        if decision.failed:
            failed = "; ".join(f"{c.name} ({c.reason})" for c in decision.failed)
            return _err(f"refused: {label} fails {failed}; a failed criterion can be neither promoted nor waived")
        for criterion in dict.fromkeys(args.waive or []):
            problem = _waivable(decision, criterion, label)
            if problem:
                return _err(problem)
        # what the approver's waivers would leave open (a review is what this command gives)
        planned = {c: Waiver("planned", cohort, args.model, version, c, (), args.approver, reason,
                             datetime.now(UTC).replace(tzinfo=None), datetime.max, policy.sha256)
                   for c in (args.waive or [])}
        _, with_planned = _judged(con, policy, cohort, args.model, version, planned)[0]
        stops = [c for c in with_planned.missing if c.resolution != "review"]
        if stops:
            flags = " ".join(f"--waive {c.name}" for c in stops if c.resolution == "waiver")
            return _err(f"refused: {label} lacks evidence for {', '.join(c.name for c in stops)}; "
                        + (f"add {flags} to record the waivers" if flags else "produce the evidence first"))
        try:
            for criterion in dict.fromkeys(args.waive or []):
                _record_waiver(con, policy, report, decision, criterion, args.approver, reason, expires)
        except WaiverError as exc:
            return _err(str(exc))
        from clinical_mlops.registry import steps

        final = steps.decide_now(con, report, policy)
        previous = registry.cohort_champion(con, cohort)
        try:
            change = registry.promote(
                con, args.model, version, actor=args.approver, reason=reason, policy_sha256=policy.sha256,
                meaning=f"manual promotion: {args.approver} approved version {version} as champion for clinical use",
            )
        except registry.RegistryError as exc:
            return _err(str(exc))
        if change is None:
            print(json.dumps({"model": args.model, "champion": version, "changed": False,
                              "message": "already the champion; nothing recorded"}, indent=2))
            return 0
        gate = _latest_gate(con, args.model, version)
        decision_id = change_control.record_decision(
            con, cohort=cohort, model_name=args.model, challenger_version=version,
            champion_version=None if previous is None else previous[1], mode="manual", passed=final.passed,
            promoted=True, modification_kinds=final.modification_kinds,
            criteria_json=final.criteria_json(), reason=reason, actor=args.approver, policy_sha256=policy.sha256,
            policy_version=policy.version, report_id=None if gate is None else gate["report_id"],
            status=change_control.PROMOTED, waiver_ids=final.waiver_ids, incidents=final.incidents,
        )
        print(json.dumps({
            **change.as_dict(), "changed": True, "decision_id": decision_id, "waiver_ids": list(final.waiver_ids),
            "gate": None if gate is None else {"report_id": gate["report_id"], "status": gate["gate_status"]},
        }, indent=2, default=str))
        return 0
    finally:
        con.close()


def _latest_gate(con, model: str, version: str) -> dict | None:
    from clinical_mlops.core.warehouse import table_exists

    if not table_exists(con, "audit.change_control_reports"):
        return None
    cursor = con.execute(
        """SELECT report_id, gate_passed, gate_status, modification_kinds_json FROM audit.change_control_reports
           WHERE model_name = ? AND challenger_version = ? ORDER BY created_at DESC LIMIT 1""",
        [model, version],
    )
    rows = cursor.fetchall()
    return dict(zip([d[0] for d in cursor.description], rows[0])) if rows else None


def cmd_release(args: argparse.Namespace) -> int:
    """Run the release job (change control, promotion gate, model cards) and say where each cohort stands."""
    from clinical_mlops.cli import runs

    try:
        outcome = runs.run_job(runs.load_definitions(), runs.project_instance(), "release_job")
    except Exception as exc:  # noqa: BLE001 - one line for the person at the terminal
        return _err(f"the release could not start: {exc}")
    promotions = {key.split("/")[0]: values for key, values in outcome.metadata.items() if key.endswith("/promotion")}
    out = {cohort: {k: values.get(k) for k in ("status", "challenger", "decision", "next_command", "waiver_ids",
                                                "mitigated_challenger", "mitigated_status", "mitigated_next_command")
                    if values.get(k) is not None}
           for cohort, values in promotions.items()}
    print(json.dumps({"run_id": outcome.run_id, "promotion": out}, indent=2, default=str))
    if not outcome.success and not promotions:
        return _err(f"the release failed: {outcome.error}")
    return 0


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
    """Add ``promote``, ``waive``, ``release``, ``rollback``, ``champion`` and ``alias-history`` to ``clinical-mlops``."""
    promote = subparsers.add_parser("promote", help="make a registered version the champion (manual approval)")
    promote.add_argument("--model", required=True, help="registered model, e.g. readmission_30d_candidate")
    promote.add_argument("--version", required=True, help="the version to promote")
    promote.add_argument("--approver", required=True, help="who approves (recorded as the signer)")
    promote.add_argument("--reason", required=True, help="why (recorded with the approval)")
    promote.add_argument("--waive", action="append", metavar="CRITERION",
                         help="record a waiver for a criterion without evidence in the same command (repeatable)")
    promote.add_argument("--expires", help="the --waive waivers hold through this day, YYYY-MM-DD (default: 90 days)")
    promote.add_argument("--policy", help="governance policy file (default: governance/policy.yaml)")
    promote.set_defaults(func=cmd_promote)

    waive = subparsers.add_parser("waive", help="a named approver accepts a criterion without evidence for one version")
    waive.add_argument("--cohort", required=True, help="e.g. readmission_30d")
    waive.add_argument("--model", required=True, help="registered model, e.g. readmission_30d_candidate")
    waive.add_argument("--version", required=True, help="the version the waiver covers")
    waive.add_argument("--criterion", required=True, help="e.g. fairness:recall_gap, min_auroc, not_assessable_groups")
    waive.add_argument("--approver", required=True, help="who waives (recorded; the ledger's actor)")
    waive.add_argument("--reason", required=True, help="why the missing evidence is acceptable")
    waive.add_argument("--expires", help="the waiver holds through this day, YYYY-MM-DD (default: 90 days)")
    waive.add_argument("--policy", help="governance policy file (default: governance/policy.yaml)")
    waive.set_defaults(func=cmd_waive)

    release = subparsers.add_parser("release", help="re-run change control and the promotion gate (after a waiver)")
    release.set_defaults(func=cmd_release)

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
