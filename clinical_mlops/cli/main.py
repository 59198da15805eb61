"""The ``clinical-mlops`` command: what a user would otherwise do by hand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clinical_mlops.core.settings import switch_off_telemetry

__all__ = ["build_parser", "cmd_demo", "cmd_land", "main"]

switch_off_telemetry()



def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole governed graph (see :mod:`clinical_mlops.cli.demo`)."""
    from clinical_mlops.cli import demo

    return demo.cmd_demo(args)


def cmd_land(args: argparse.Namespace) -> int:
    """``land FILE [--source NAME]`` (see :mod:`clinical_mlops.cli.pipeline`)."""
    from clinical_mlops.cli import pipeline

    return pipeline.cmd_land(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clinical-mlops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole graph on synthetic data or a real source's file (the UCI zip, a sepsis CSV)")
    demo.add_argument("--source", type=Path, help="a real extract: the UCI zip or diabetic_data.csv, a sepsis_survival "
                      "CSV … (default: synthetic data, source synthetic_diabetes130)")
    demo.add_argument("--source-name", help="the source contract of --source (default: the one its header matches)")
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
    demo.add_argument(
        "--label-delay-seconds", type=float, default=2.0,
        help="the label delay of the production windows, compressed from the policy's days to seconds "
        "(the early warning fires before a window's labels; they are joined this long after its last prediction)",
    )
    demo.set_defaults(func=cmd_demo)

    from clinical_mlops.cli import audit as cli_audit, bench as cli_bench, fairness as cli_fairness, pipeline as cli_pipeline, registry as cli_registry, serving as cli_serving, sources as cli_sources

    for module in (cli_pipeline, cli_fairness, cli_registry, cli_audit, cli_serving, cli_bench):
        module.register(sub)
    cli_sources.add_source_init_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; known failure classes (disk, lock, store) end as one ``error:`` line and exit 1."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except Exception as exc:
        from clinical_mlops.cli import errors as cli_errors  # DuckDB's error classes: only when there is an error

        message = cli_errors.describe(exc)
        if message is None:
            raise
        _say(f"error: {message}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
