"""``clinical-mlops bench``: every measurement side by side in one run, written as JSON, Markdown and a plot.

One run measures, each part in its own child processes: Dagster's per-step cost and loading the
Definitions; ``--help`` and ``land`` of a 5,000-row extract (:mod:`.startup`); the bare script and
the readmission graph alternated, and the naive script (:mod:`.compare`); the whole demo; every
stage at each size beside a plain DuckDB scan (:mod:`.scale`); the scoring service beside
``mlflow models serve`` (:mod:`.serving`). Then :func:`clinical_mlops.bench.targets.targets` puts
issue 16's targets in one table. ``quick`` (:data:`QUICK`) runs the parts smaller — synthetic data,
one repeat, one small size, no naive script, no per-step overhead, no evaluation stage — and leaves
out the whole demo
(minutes on this machine: its row says not measured); every row is marked quick. It is a regression
guard, not the target figures.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from clinical_mlops.bench import report, targets
from clinical_mlops.bench.compare import BENCH_PSEUDONYM_KEY, INSTANCE_YAML, child, workspace_env
from clinical_mlops.bench.measure import BenchStepError
from clinical_mlops.core.settings import PROJECT_ROOT

__all__ = [
    "BENCH_DIR",
    "BENCH_PSEUDONYM_KEY",
    "BenchOptions",
    "DEFAULT_SIZES",
    "INSTANCE_YAML",
    "QUICK",
    "QUICK_NO_DEMO",
    "QUICK_SKIPPED_STAGES",
    "machine",
    "quick_options",
    "run_bench",
    "run_overhead",
    "run_scale",
    "run_serving",
    "run_startup",
    "workspace_env",
]

DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
BENCH_DIR = PROJECT_ROOT / ".bench"


@dataclass
class BenchOptions:
    source: Path | None = None
    """The UCI zip/CSV for the comparison and the demo; None = synthetic encounters."""
    compare_encounters: int = 100_000
    """Synthetic encounters for the comparison when there is no source."""
    demo_encounters: int | None = None
    """Synthetic encounters of the demo when there is no source (None: the demo's default)."""
    sizes: tuple[int, ...] = DEFAULT_SIZES
    repeats: int = 2
    """Alternated runs of the bare script and the graph (and of ``--help``/``land``); medians are reported."""
    out_dir: Path = BENCH_DIR
    work_dir: Path | None = None
    """Where the generated data and workspaces go (default: a temp folder under ``out_dir``)."""
    compare: bool = True
    demo: bool = True
    startup: bool = True
    scale: bool = True
    overhead: bool = True
    serving: bool = True
    quick: bool = False
    keep_work: bool = False
    say: Callable[[str], None] = field(default=lambda message: None)


QUICK = {"compare_encounters": 3_000, "sizes": (5_000,), "repeats": 1}
"""What ``--quick`` changes besides: synthetic data, no whole demo, no naive script, no per-step overhead."""
QUICK_SKIPPED_STAGES = ("evaluation",)
"""Scale stages ``--quick`` leaves out: not counted by the 10M target, needed by no stage after them."""
QUICK_NO_DEMO = "not measured in --quick (the whole demo takes minutes here): run `clinical-mlops bench`"


def quick_options(options: BenchOptions) -> BenchOptions:
    """``options`` made quick: :data:`QUICK`'s sizes, synthetic data, one repeat, no demo."""
    for name, value in QUICK.items():
        setattr(options, name, value)
    options.source, options.quick = None, True
    return options


def _not_measured(why: str) -> dict:
    return {"not_measured": why}


def run_overhead(work: Path, repeats: int = 3, *, per_step: bool = True) -> dict:
    """Loading the Definitions (a fresh process) and, with ``per_step``, Dagster's cost per asset step."""
    root = work / "overhead"
    root.mkdir(parents=True, exist_ok=True)
    imports = child("load_definitions", "clinical_mlops.bench.imports", root)
    result: dict = {"load_definitions": {**imports.extra, "process_wall_seconds": imports.wall_seconds,
                                         "peak_rss_mib": imports.peak_rss_mib}}
    if per_step:
        steps = child("per_step_overhead", "clinical_mlops.bench.overhead", root, "--repeats", str(repeats))
        result["per_step"] = {**steps.extra, "process_wall_seconds": steps.wall_seconds}
    return result


def run_startup(options: BenchOptions, work: Path) -> dict:
    """``--help`` and ``land`` of a 5,000-row extract, by :func:`clinical_mlops.bench.startup.run_startup`."""
    try:
        from clinical_mlops.bench.startup import run_startup as measure_startup
    except ImportError:
        return _not_measured("not measured: clinical_mlops.bench.startup is not installed yet")
    return measure_startup(work / "startup", repeats=options.repeats, say=options.say)


def run_serving(options: BenchOptions, work: Path) -> dict:
    """The scoring service beside ``mlflow models serve``, by :func:`clinical_mlops.bench.serving.measure_serving`.

    Its result is kept whole under ``raw``; ``concurrency`` gives ``ours_rps``/``mlflow_rps`` per
    concurrency (from its ``levels``) and ``durability`` the kill -9 check (acknowledged predictions,
    those missing from the log as ``lost``, whether the hash chain verified).
    """
    try:
        from clinical_mlops.bench.serving import measure_serving
    except ImportError:
        return _not_measured("not measured: clinical_mlops.bench.serving is not installed yet")
    raw = measure_serving(work / "serving", quick=options.quick, say=options.say)
    levels = raw.get("levels") or {}
    concurrency = {level: {"ours_rps": (levels.get(level) or {}).get("ours", {}).get("req_per_s"),
                           "mlflow_rps": (levels.get(level) or {}).get("mlflow", {}).get("req_per_s")}
                   for level in ("1", "8")}
    kill = raw.get("durability") or {}
    durability = {"acknowledged": kill.get("acknowledged"), "lost": kill.get("missing_from_log"),
                  "chain_ok": kill.get("chain_ok")} if kill else {}
    return {"concurrency": concurrency, "durability": durability, "raw": raw}


def run_scale(options: BenchOptions, work: Path) -> list[dict]:
    from clinical_mlops.bench import scale

    results: list[dict] = []
    for rows in options.sizes:
        root = work / f"scale_{rows}"
        root.mkdir(parents=True, exist_ok=True)
        for stage in scale.STAGES:
            if options.quick and stage.name in QUICK_SKIPPED_STAGES:
                continue
            options.say(f"scale {rows:,}: {stage.name} …")
            m = child(f"{stage.name}_{rows}", "clinical_mlops.bench.scale", root, stage.name, "--rows", str(rows),
                      "--workspace", str(root), rows=rows)
            processed = int(m.extra.get("rows_processed", rows))
            results.append({"stage": stage.name, "encounters": rows, "wall_seconds": m.wall_seconds,
                            "peak_rss_mib": m.peak_rss_mib, "rows_processed": processed,
                            "rows_per_second": round(processed / m.wall_seconds) if m.wall_seconds else None,
                            "details": {k: v for k, v in m.extra.items() if k != "rows_processed"}})
            options.say(f"  {m.wall_seconds:.1f} s, {m.peak_rss_mib:.0f} MiB")
        if not options.keep_work:
            shutil.rmtree(root, ignore_errors=True)
    return results


def machine() -> dict:
    import psutil

    from clinical_mlops.core.provenance import code_provenance

    code = code_provenance()
    return {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "git_commit": code.get("git_commit"), "git_dirty": code.get("git_dirty")}


def _guarded(results: dict, key: str, options: BenchOptions, measure: Callable[[], object]) -> None:
    """Another slice's measurement that fails is recorded as not measured, with why; the run goes on."""
    try:
        results[key] = measure()
    except Exception as error:  # noqa: BLE001 - recorded, shown in the targets table
        options.say(f"{key} failed: {error}")
        results[key] = _not_measured(f"not measured: failed ({type(error).__name__}: {str(error)[:200]})")


def run_bench(options: BenchOptions) -> Path:
    """Run every selected measurement; return the folder holding bench.json, bench.md and bench.png."""
    from clinical_mlops.bench.compare import run_comparison, run_demo

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = options.out_dir / stamp
    out.mkdir(parents=True, exist_ok=True)
    work_parent = Path(options.work_dir or options.out_dir)
    work_parent.mkdir(parents=True, exist_ok=True)  # --work-dir may name a folder not yet made
    work = Path(tempfile.mkdtemp(prefix="work_", dir=work_parent))
    results: dict = {"started": stamp, "quick": options.quick, "machine": machine(),
                     "options": {"source": str(options.source) if options.source else None,
                                 "sizes": list(options.sizes), "repeats": options.repeats}}
    started = time.perf_counter()
    try:
        if options.overhead:
            options.say("overhead: per asset step, loading the Definitions …")
            results["overhead"] = run_overhead(work, per_step=not options.quick)
        if options.startup:
            _guarded(results, "startup", options, lambda: run_startup(options, work))
        if options.compare:
            results["comparison"] = run_comparison(work / "compare", source=options.source,
                                                   encounters=options.compare_encounters, repeats=options.repeats,
                                                   naive=not options.quick, say=options.say,
                                                   why_synthetic="--quick" if options.quick else "no real extract given")
        if options.demo and options.quick:
            results["demo"] = _not_measured(QUICK_NO_DEMO)
        elif options.demo:
            results["demo"] = run_demo(work, source=options.source, encounters=options.demo_encounters,
                                       say=options.say)
        if options.scale:
            try:
                results["scale"] = run_scale(options, work)
            except BenchStepError as error:  # the parts already measured are kept; the run stops here
                results["scale_error"] = str(error).splitlines()[0]
                raise
        if options.serving:
            _guarded(results, "serving", options, lambda: run_serving(options, work))
    finally:
        results["total_seconds"] = round(time.perf_counter() - started, 1)
        results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        results["targets"] = targets.targets(results)
        (out / "bench.json").write_text(json.dumps(results, indent=2, default=str))
        report.write(results, out)
        latest = options.out_dir / "latest"
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(out.name)
        if not options.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    return out
