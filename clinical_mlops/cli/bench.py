"""``clinical-mlops bench``: measure the pipeline on this machine (see :mod:`clinical_mlops.bench`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s.strip().replace("_", "")) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be integers separated by commas, got {text!r}") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def _bench(args: argparse.Namespace) -> int:
    from clinical_mlops.bench.measure import BenchStepError
    from clinical_mlops.bench.run import BenchOptions, quick_options, run_bench

    source = args.source.resolve() if args.source else None  # the demo runs in its own folder
    if source is None and not args.synthetic:
        shared = Path(__file__).resolve().parents[3] / "shared" / "data" / "diabetes130" / "dataset_diabetes.zip"
        source = shared if shared.exists() else None
    options = BenchOptions(
        source=source, compare_encounters=args.compare_encounters, sizes=args.sizes, repeats=args.repeats,
        out_dir=args.out, work_dir=args.work_dir, compare=not args.skip_compare, demo=not args.skip_demo,
        startup=not args.skip_startup, scale=not args.skip_scale, overhead=not args.skip_overhead,
        serving=not args.skip_serving, keep_work=args.keep_work,
        say=lambda message: print(message, file=sys.stderr, flush=True),
    )
    if args.quick:
        options = quick_options(options)
    try:
        out = run_bench(options)
    except BenchStepError as error:
        print(f"bench failed: {error}", file=sys.stderr)
        return 1
    print((out / "bench.md").read_text())
    print(f"written to {out}/bench.json, bench.md and bench.png", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from clinical_mlops.bench.run import BENCH_DIR, DEFAULT_SIZES

    bench = sub.add_parser("bench", help="measure issue 16's targets: the graph, the demo, start-up, 10M rows and "
                                         "serving, each beside its yardstick in the same run")
    bench.add_argument("--source", type=Path, help="UCI zip/CSV for the comparison (default: ../shared's, if present)")
    bench.add_argument("--synthetic", action="store_true", help="compare on synthetic data even if the UCI extract is present")
    bench.add_argument("--compare-encounters", type=int, default=100_000, help="synthetic encounters for the comparison")
    bench.add_argument("--sizes", type=_sizes, default=DEFAULT_SIZES,
                       help="encounters per scale step, comma-separated (default 100000,1000000,10000000)")
    bench.add_argument("--out", type=Path, default=BENCH_DIR, help="results folder (gitignored .bench/ by default)")
    bench.add_argument("--work-dir", type=Path, help="where generated data goes (default: under --out)")
    bench.add_argument("--repeats", type=int, default=2, help="alternated runs of the bare script and the graph (median)")
    bench.add_argument("--quick", action="store_true",
                       help="every part, smaller: synthetic data, one small size, one repeat (a regression guard)")
    bench.add_argument("--skip-compare", action="store_true")
    bench.add_argument("--skip-demo", action="store_true")
    bench.add_argument("--skip-startup", action="store_true")
    bench.add_argument("--skip-scale", action="store_true")
    bench.add_argument("--skip-overhead", action="store_true")
    bench.add_argument("--skip-serving", action="store_true")
    bench.add_argument("--keep-work", action="store_true", help="keep generated data and workspaces")
    bench.set_defaults(func=_bench)
