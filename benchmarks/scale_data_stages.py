"""Wall time, peak RSS and rows/s of each data stage at N synthetic encounters.

Each stage of :mod:`clinical_mlops.scale_stages` runs in its own subprocess, so its peak RSS
(``ru_maxrss`` from ``os.wait4``) is its own. One JSON line per stage on stdout.

    uv run --frozen python benchmarks/scale_data_stages.py --rows 100000 1000000 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("generate", "land", "validate", "features", "split", "train")


def run_stage(stage: str, workspace: Path, rows: int, extra: list[str]) -> dict:
    """Run one stage in a child process; its wall time, peak RSS and printed result."""
    command = [sys.executable, "-m", "clinical_mlops.scale_stages", stage, str(workspace), "--rows", str(rows), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    out = child.stdout.read().decode() if child.stdout else ""
    err = child.stderr.read().decode() if child.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {stage} failed:\n{err[-4000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    rows_done = int(result.get("rows", rows))
    return {
        "n_encounters": rows, "stage": stage, "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),  # less sensitive than wall time to a busy machine
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
        "rows_per_s": round(rows_done / wall) if wall else None, "result": result,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary workspaces")
    parser.add_argument("--keep", action="store_true", help="keep each workspace")
    parser.add_argument("--memory-limit", default=None, help="DuckDB memory_limit per stage, e.g. 3GB")
    parser.add_argument("--max-training-rows", type=int, default=None)
    args = parser.parse_args()
    for rows in args.rows:
        workspace = Path(tempfile.mkdtemp(prefix=f"scale_{rows}_", dir=args.workdir))
        extra = ["--memory-limit", args.memory_limit] if args.memory_limit else []
        if args.max_training_rows:
            extra += ["--max-training-rows", str(args.max_training_rows)]
        try:
            for stage in args.stages:
                print(json.dumps(run_stage(stage, workspace, rows, extra)), flush=True)
        finally:
            if not args.keep:
                shutil.rmtree(workspace, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
