"""``clinical-mlops bench``: every measurement side by side in one run, written as JSON, Markdown and a plot."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from clinical_mlops.bench import report
from clinical_mlops.bench.measure import Measurement, measure, python_module
from clinical_mlops.core.settings import PROJECT_ROOT

__all__ = [
    "BENCH_DIR",
    "BENCH_PSEUDONYM_KEY",
    "BenchOptions",
    "DEFAULT_SIZES",
    "INSTANCE_YAML",
    "comparison_extracts",
    "comparison_source",
    "machine",
    "run_bench",
    "run_comparison",
    "run_overhead",
    "run_scale",
    "workspace_env",
]

DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
BENCH_DIR = PROJECT_ROOT / ".bench"
BENCH_PSEUDONYM_KEY = "bench-key-not-secret"

INSTANCE_YAML = """telemetry:
  enabled: false
storage:
  sqlite:
    base_dir: {home}/storage
local_artifact_storage:
  module: dagster._core.storage.root
  class: LocalArtifactStorage
  config:
    base_dir: {home}
compute_logs:
  module: dagster._core.storage.local_compute_log_manager
  class: LocalComputeLogManager
  config:
    base_dir: {home}/logs
concurrency:
  pools:
    default_limit: 1
    granularity: op
"""


@dataclass
class BenchOptions:
    source: Path | None = None
    """The UCI zip/CSV for the comparison; None = synthetic encounters."""
    compare_encounters: int = 100_000
    """Synthetic encounters for the comparison when there is no source."""
    sizes: tuple[int, ...] = DEFAULT_SIZES
    out_dir: Path = BENCH_DIR
    work_dir: Path | None = None
    """Where the generated data and workspaces go (default: a temp folder under ``out_dir``)."""
    compare: bool = True
    scale: bool = True
    overhead: bool = True
    keep_work: bool = False
    say: Callable[[str], None] = field(default=lambda message: None)


def workspace_env(root: Path) -> dict[str, str]:
    """Environment of a child run: its own data folder and Dagster instance, nothing shared."""
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(INSTANCE_YAML.format(home=home.as_posix()))
    env = {
        "CLINICAL_MLOPS_DATA_DIR": str(root / "data"),
        "DAGSTER_HOME": str(home),
        "CLINICAL_MLOPS_PSEUDONYM_KEY": os.environ.get("CLINICAL_MLOPS_PSEUDONYM_KEY", BENCH_PSEUDONYM_KEY),
        "CLINICAL_MLOPS_ACTOR": "bench",
    }
    for inherited in ("MLFLOW_TRACKING_URI", "CLINICAL_MLOPS_LEDGER", "CLINICAL_MLOPS_LEDGER_HEAD",
                      "CLINICAL_MLOPS_WAREHOUSE", "CLINICAL_MLOPS_LANDING_DIR"):
        env[inherited] = ""
    return env


def _child(name: str, module: str, root: Path, *args: str, rows: int | None = None) -> Measurement:
    """Measure ``python -m module`` in the workspace ``root`` (an empty value in its env = unset)."""
    overrides = workspace_env(root)
    env = {k: v for k, v in {**os.environ, **overrides}.items() if v}
    result = root / f"{name}.json"
    return measure(name, python_module(module, *args, "--result", str(result)), env=env, rows=rows,
                   log=root / f"{name}.log", result_file=result)


def comparison_extracts(options: BenchOptions, directory: Path) -> list[Path]:
    """The comparison's input: the source (or synthetic data) cut into two sequential extracts."""
    from clinical_mlops.ingestion import uci

    if options.source is not None:
        encounters = uci.load_uci_encounters(options.source)
        prefix = "uci"
    else:
        from clinical_mlops.ingestion import synthetic

        encounters = synthetic.generate_encounters(
            synthetic.SyntheticConfig(n_encounters=options.compare_encounters, seed=42))
        prefix = f"synthetic_n{options.compare_encounters}"
    return uci.write_sequential_extracts(encounters, directory, 2, prefix=prefix)


def comparison_source(options: BenchOptions) -> str:
    """The source contract the comparison's extracts land in: the real release's or the synthetic one."""
    return "diabetes130" if options.source is not None else "synthetic_diabetes130"


def run_comparison(options: BenchOptions, work: Path) -> dict:
    """Bare script, plain pipeline script and orchestrated graph on the same extracts."""
    extracts = comparison_extracts(options, work / "extracts")
    source = comparison_source(options)
    rows = None
    measured: dict[str, dict] = {}
    for name, module in (("bare_script", "clinical_mlops.bench.bare"),
                         ("plain_pipeline", "clinical_mlops.bench.plain"),
                         ("orchestrated_graph", "clinical_mlops.bench.orchestrated")):
        options.say(f"comparison: {name} …")
        root = work / name
        landing = root / "data" / "landing" / source  # the source's folder of the landing zone, as the graph expects
        landing.mkdir(parents=True, exist_ok=True)
        copies = [Path(shutil.copy2(p, landing / p.name)) for p in extracts]
        source_args = () if name == "bare_script" else ("--source", source)
        m = _child(name, module, root, *source_args, *map(str, copies))
        rows = rows or m.extra.get("rows")
        measured[name] = replace(m, rows=m.extra.get("rows")).as_dict()
        options.say(f"  {m.wall_seconds:.1f} s, {m.peak_rss_mib:.0f} MiB")
    bare, plain, graph = (measured[k]["wall_seconds"] for k in ("bare_script", "plain_pipeline", "orchestrated_graph"))
    return {
        "source": str(options.source) if options.source else f"synthetic ({options.compare_encounters:,} encounters)",
        "source_contract": source,
        "rows": rows,
        "extracts": [p.name for p in extracts],
        "variants": measured,
        "ratios": {
            "orchestrated_vs_bare": round(graph / bare, 2),
            "plain_vs_bare": round(plain / bare, 2),
            "orchestrated_vs_plain": round(graph / plain, 2),
        },
    }


def run_overhead(work: Path) -> dict:
    root = work / "overhead"
    root.mkdir(parents=True, exist_ok=True)
    steps = _child("per_step_overhead", "clinical_mlops.bench.overhead", root)
    imports = _child("load_definitions", "clinical_mlops.bench.imports", root)
    return {"per_step": {**steps.extra, "process_wall_seconds": steps.wall_seconds},
            "load_definitions": {**imports.extra, "process_wall_seconds": imports.wall_seconds,
                                 "peak_rss_mib": imports.peak_rss_mib}}


def run_scale(options: BenchOptions, work: Path) -> list[dict]:
    from clinical_mlops.bench import scale

    results: list[dict] = []
    for rows in options.sizes:
        root = work / f"scale_{rows}"
        root.mkdir(parents=True, exist_ok=True)
        for stage in scale.STAGES:
            options.say(f"scale {rows:,}: {stage.name} …")
            m = _child(f"{stage.name}_{rows}", "clinical_mlops.bench.scale", root, stage.name, "--rows", str(rows),
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


def run_bench(options: BenchOptions) -> Path:
    """Run every selected measurement; return the folder holding bench.json, bench.md and bench.png."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = options.out_dir / stamp
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work_", dir=options.work_dir or options.out_dir))
    results: dict = {"started": stamp, "machine": machine()}
    started = time.perf_counter()
    try:
        if options.overhead:
            results["overhead"] = run_overhead(work)
        if options.compare:
            results["comparison"] = run_comparison(options, work / "compare")
        if options.scale:
            results["scale"] = run_scale(options, work)
    finally:
        results["total_seconds"] = round(time.perf_counter() - started, 1)
        results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        (out / "bench.json").write_text(json.dumps(results, indent=2))
        report.write(results, out)
        latest = options.out_dir / "latest"
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(out.name)
        if not options.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    return out
