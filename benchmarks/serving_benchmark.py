"""Scoring service benchmark: req/s and latency beside ``mlflow models serve``, and durability under kill -9.

Run from the project root (not a test; a few minutes)::

    uv run python -m benchmarks.serving_benchmark --out bench.json
    # the same run with an earlier version's service beside it ("before"):
    git archive main clinical_mlops cohorts governance sources | tar -x -C /tmp/before
    uv run python -m benchmarks.serving_benchmark --baseline /tmp/before

All the work is :func:`clinical_mlops.bench.serving.measure_serving` (also run by
``clinical-mlops bench``); this prints its table. See that module for what is compared.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from clinical_mlops.core.settings import switch_off_telemetry

switch_off_telemetry()

LABELS = {"ours": "clinical-mlops serve (auth, validation, fsync'ed hash-chained log)",
          "before": "clinical-mlops serve, baseline tree",
          "mlflow": "mlflow models serve --env-manager local"}


def markdown(result: dict) -> str:
    lines = ["| concurrency | server | req/s | p50 ms | p95 ms | errors |", "|---:|---|---:|---:|---:|---:|"]
    for c, level in result["levels"].items():
        for kind in ("ours", "before", "mlflow"):
            if kind in level:
                m = level[kind]
                lines.append(f"| {c} | {LABELS[kind]} | {m['req_per_s']:.0f} | {m['p50_ms']:.1f} | "
                             f"{m['p95_ms']:.1f} | {m['errors']} |")
        lines.append(f"| {c} | **ratio ours / mlflow** | **{level['ratio_req_per_s']:.2f}×** | "
                     f"{level['ratio_p50']:.2f}× | | |")
        if "ratio_before_req_per_s" in level:
            lines.append(f"| {c} | ratio baseline / mlflow | {level['ratio_before_req_per_s']:.2f}× | | | |")
    d = result["durability"]
    lines += ["", f"Medians of {result['rounds']} alternated rounds of {result['requests_per_level']} requests per "
              f"server and level; scorer in service: {result.get('scorer')}. Durability: {len(d['kills'])} × kill -9 "
              f"under load at concurrency 8 — acknowledged {d['acknowledged']}, missing from the log "
              f"**{d['missing_from_log']}**, chain verified after every kill: {d['chain_ok']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from clinical_mlops.bench.serving import measure_serving

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=800, help="requests per server, level and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a small model workspace, one round of 120 requests, one kill")
    parser.add_argument("--baseline", type=Path, default=None, help="source tree of an earlier service to measure too")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="serving_benchmark_"))
    result = measure_serving(work, requests=args.requests, quick=args.quick, rounds=args.rounds,
                             concurrency=args.concurrency, kills=None if args.quick else args.kills,
                             baseline=args.baseline)
    print(markdown(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str))
    return 0 if result["durability"]["missing_from_log"] == 0 and result["durability"]["chain_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
