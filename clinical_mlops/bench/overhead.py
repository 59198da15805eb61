"""Dagster's cost per asset step with the project's executor (in-process) on a SQLite instance.

Two chains of no-op assets, short and long, run in one warm process; the difference per extra
step is what orchestration adds to every asset: step events, the event log, run storage.
Run as ``python -m clinical_mlops.bench.overhead --result out.json`` with ``DAGSTER_HOME``
pointing at a prepared instance folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

__all__ = ["main", "measure", "noop_chain"]

SHORT, LONG = 1, 17


def noop_chain(n: int, prefix: str) -> list:
    """``n`` assets that do nothing, each depending on the one before."""
    import dagster as dg

    assets, previous = [], None
    for i in range(n):
        @dg.asset(name=f"{prefix}_{i}", deps=[previous] if previous else [])
        def _noop() -> None:
            return None

        assets.append(_noop)
        previous = _noop.key
    return assets


def measure(repeats: int = 3) -> dict:
    """Median seconds per extra step over ``repeats`` pairs of runs (after one warm-up pair)."""
    import dagster as dg

    from clinical_mlops.cli import runs

    instance = runs.project_instance()
    short, long = noop_chain(SHORT, "short"), noop_chain(LONG, "long")
    defs = dg.Definitions(assets=[*short, *long], jobs=[
        dg.define_asset_job("short_job", selection=dg.AssetSelection.assets(*short)),
        dg.define_asset_job("long_job", selection=dg.AssetSelection.assets(*long)),
    ], executor=dg.in_process_executor)

    def timed(job_name: str) -> float:
        started = time.perf_counter()
        result = defs.resolve_job_def(job_name).execute_in_process(instance=instance, raise_on_error=True)
        assert result.success
        return time.perf_counter() - started

    timed("short_job"), timed("long_job")  # warm-up: imports, instance migrations, caches
    per_step, run_floor = [], []
    for _ in range(repeats):
        t_short, t_long = timed("short_job"), timed("long_job")
        per_step.append((t_long - t_short) / (LONG - SHORT))
        run_floor.append(t_short)
    return {"executor": "in_process", "storage": "sqlite", "repeats": repeats,
            "seconds_per_step": round(statistics.median(per_step), 4),
            "seconds_per_run_with_one_step": round(statistics.median(run_floor), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    args.result.write_text(json.dumps(measure(args.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
