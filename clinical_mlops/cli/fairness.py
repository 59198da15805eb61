"""Command-line access to the fairness side: the governance document, audit summaries and incidents."""

from __future__ import annotations

from clinical_mlops.core.settings import DEFAULT_COHORT

import argparse
import json
import sys
from pathlib import Path

from clinical_mlops.core.settings import default_paths

__all__ = ["register"]


def _policy(args: argparse.Namespace):
    from clinical_mlops.governance.policy import load_policy

    return load_policy(Path(args.policy) if args.policy else None)


def _governance(args: argparse.Namespace) -> int:
    from clinical_mlops.fairness import governance_document
    from clinical_mlops.governance.policy import PolicyError

    try:
        policy = _policy(args)
    except PolicyError as error:
        print(f"invalid policy: {error}", file=sys.stderr)
        return 2
    text = (governance_document.governance_html(policy) if args.format == "html"
            else governance_document.governance_markdown(policy))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"governance document (policy {policy.version}, sha256 {policy.short_hash}) written to {args.out}")
    else:
        print(text)
    return 0


def _connect(args: argparse.Namespace):
    from clinical_mlops.core import warehouse

    return warehouse.connect(Path(args.warehouse) if args.warehouse else default_paths().warehouse)


def _summary(args: argparse.Namespace) -> int:
    from clinical_mlops.fairness import audit as fairness

    con = _connect(args)
    try:
        print(json.dumps(fairness.summary_for(con, args.cohort), indent=2))
    finally:
        con.close()
    return 0


def _incidents(args: argparse.Namespace) -> int:
    from clinical_mlops.monitoring import incidents

    con = _connect(args)
    try:
        table = incidents.list_incidents(con, args.cohort, args.status)
    finally:
        con.close()
    if table.empty:
        print("no incidents")
        return 0
    for r in table.itertuples(index=False):
        print(f"{r.incident_id}  {r.status:<12} {r.severity:<15} owner={r.owner:<14} due={r.due_by:%Y-%m-%d %H:%M}Z  "
              f"{r.cohort}  {r.model}  {r.check}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    gov = subparsers.add_parser("governance", help="write the governance document generated from the policy")
    gov.add_argument("--policy", help="policy file (default governance/policy.yaml)")
    gov.add_argument("--format", choices=("md", "html"), default="md")
    gov.add_argument("--out", help="write to this file instead of standard output")
    gov.set_defaults(func=_governance)

    summary = subparsers.add_parser("fairness-summary", help="latest fairness verdicts and the recall gap before/after")
    summary.add_argument("--cohort", default=DEFAULT_COHORT, help=f"cohort (default {DEFAULT_COHORT})")
    summary.add_argument("--warehouse", help="DuckDB file (default data/warehouse.duckdb)")
    summary.set_defaults(func=_summary)

    inc = subparsers.add_parser("incidents", help="list incident records opened by failing gates")
    inc.add_argument("--cohort")
    inc.add_argument("--status")
    inc.add_argument("--warehouse", help="DuckDB file (default data/warehouse.duckdb)")
    inc.set_defaults(func=_incidents)
