"""The graph and the whole demo against the like-for-like bare script, alternated in one run.

:func:`run_comparison` cuts the source (the real UCI zip, else synthetic encounters: the result says
which) into two sequential extracts and runs, ``repeats`` times in turn, the bare script
(:mod:`.bare`) and the orchestrated readmission graph land → evaluation (:mod:`.orchestrated`),
each in a fresh workspace and its own process; then once the naive script (:mod:`.naive`, the
earlier "bare" yardstick, not like for like, kept to show what the earlier ratio compared).
:func:`run_demo` runs the whole ``clinical-mlops demo`` in a fresh data folder as a subprocess.
Figures are medians of the alternated runs; each run's own figure is kept beside.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from clinical_mlops.bench.measure import Measurement, measure, python_module

__all__ = ["cli_argv", "comparison_extracts", "comparison_source", "child", "run_comparison", "run_demo",
           "summarise", "workspace_env"]

BENCH_PSEUDONYM_KEY = "bench-key-not-secret"

INSTANCE_YAML = """telemetry:
  enabled: false
storage:
  custom:
    module: clinical_mlops.defs.dagster_internals
    class: LocalStorage
    config:
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


def _env(root: Path) -> dict[str, str]:
    return {k: v for k, v in {**os.environ, **workspace_env(root)}.items() if v}  # an empty value = unset


def child(name: str, module: str, root: Path, *args: str, rows: int | None = None) -> Measurement:
    """Measure ``python -m module`` in the workspace ``root``."""
    result = root / f"{name}.json"
    return measure(name, python_module(module, *args, "--result", str(result)), env=_env(root), rows=rows,
                   log=root / f"{name}.log", result_file=result)


def cli_argv(*args: str) -> list[str]:
    """argv of the ``clinical-mlops`` console script beside this interpreter (else ``python -m``)."""
    script = Path(sys.executable).parent / "clinical-mlops"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "clinical_mlops.cli", *args]


def comparison_source(source: Path | None) -> str:
    """The source contract the comparison's extracts follow: the real release's or the synthetic one."""
    return "diabetes130" if source is not None else "synthetic_diabetes130"


def comparison_extracts(source: Path | None, encounters: int, directory: Path) -> list[Path]:
    """The comparison's input: the source (or ``encounters`` synthetic ones) cut into two sequential extracts."""
    from clinical_mlops.ingestion import uci

    if source is not None:
        frame, prefix = uci.load_uci_encounters(source), "uci"
    else:
        from clinical_mlops.ingestion import synthetic

        frame = synthetic.generate_encounters(synthetic.SyntheticConfig(n_encounters=encounters, seed=42))
        prefix = f"synthetic_n{encounters}"
    return uci.write_sequential_extracts(frame, directory, 2, prefix=prefix)


def summarise(samples: list[Measurement]) -> dict:
    """Median wall time of the runs, each run's wall time, the largest peak RSS, the last run's result."""
    walls = [m.wall_seconds for m in samples]
    return {"wall_seconds": round(statistics.median(walls), 3), "samples_wall_seconds": walls,
            "peak_rss_mib": max(m.peak_rss_mib for m in samples), "runs": len(samples), "extra": samples[-1].extra}


def _in_workspace(name: str, module: str, root: Path, source: str, extracts: list[Path], *args: str) -> Measurement:
    landing = root / "data" / "landing" / source  # the source's folder of the landing zone, as the graph expects
    landing.mkdir(parents=True, exist_ok=True)
    copies = [Path(shutil.copy2(p, landing / p.name)) for p in extracts]
    return child(name, module, root, *args, *map(str, copies))


def run_comparison(work: Path, *, source: Path | None, encounters: int, repeats: int, naive: bool = True,
                   why_synthetic: str = "no real extract given",
                   say: Callable[[str], None] = lambda message: None) -> dict:
    """Bare script and graph alternated ``repeats`` times, then (``naive``) the naive script once."""
    extracts = comparison_extracts(source, encounters, work / "extracts")
    contract = comparison_source(source)
    variants = {"bare_script": ("clinical_mlops.bench.bare", ("--source", contract)),
                "orchestrated_graph": ("clinical_mlops.bench.orchestrated", ("--source", contract))}
    runs: dict[str, list[Measurement]] = {name: [] for name in variants}
    for i in range(repeats):
        for name, (module, args) in variants.items():
            say(f"comparison {i + 1}/{repeats}: {name} …")
            m = _in_workspace(name, module, work / f"{name}_{i}", contract, extracts, *args)
            runs[name].append(m)
            say(f"  {m.wall_seconds:.1f} s, {m.peak_rss_mib:.0f} MiB")
    if naive:
        say("comparison: naive_script …")
        runs["naive_script"] = [_in_workspace("naive_script", "clinical_mlops.bench.naive", work / "naive_script",
                                              contract, extracts)]
        say(f"  {runs['naive_script'][0].wall_seconds:.1f} s, {runs['naive_script'][0].peak_rss_mib:.0f} MiB")
    measured = {name: summarise(samples) for name, samples in runs.items()}
    bare, graph = measured["bare_script"], measured["orchestrated_graph"]
    bare_auroc, graph_auroc = bare["extra"].get("test_auroc"), graph["extra"].get("candidate_auroc")
    described = (f"real extract {source.name}" if source is not None
                 else f"synthetic data ({encounters:,} encounters): {why_synthetic}")
    return {
        "source": str(source) if source is not None else f"synthetic ({encounters:,} encounters)",
        "source_contract": contract, "synthetic": source is None,
        "source_note": f"{described}; median of {repeats} alternated run(s)",
        "rows": graph["extra"].get("rows"), "extracts": [p.name for p in extracts], "repeats": repeats,
        "bare_wall_seconds": bare["wall_seconds"], "bare": bare, "graph": graph, "variants": measured,
        "auroc": {"bare_script": bare_auroc, "graph_candidate": graph_auroc,
                  "difference": None if bare_auroc is None or graph_auroc is None else round(graph_auroc - bare_auroc, 4)},
        "ratios": {f"{name}_vs_bare": round(v["wall_seconds"] / bare["wall_seconds"], 2)
                   for name, v in measured.items() if name != "bare_script"},
    }


_STEP = re.compile(r"✓ (\S+) \((\d+(?:\.\d+)?) ?s\)")


def run_demo(work: Path, *, source: Path | None, encounters: int | None = None,
             say: Callable[[str], None] = lambda message: None) -> dict:
    """The whole ``clinical-mlops demo`` (the real zip, else synthetic data) in a fresh data folder."""
    root = work / "demo"
    root.mkdir(parents=True, exist_ok=True)
    summary = root / "summary.json"
    args = ["demo", "--summary-json", str(summary)]
    if source is not None:
        args += ["--source", str(Path(source).resolve())]
    elif encounters is not None:
        args += ["--encounters", str(encounters)]
    say(f"demo: clinical-mlops {' '.join(args[:1] + args[3:])} …")
    log = root / "demo.log"
    m = measure("demo", cli_argv(*args), env=_env(root), cwd=root, log=log)
    say(f"  {m.wall_seconds:.1f} s, {m.peak_rss_mib:.0f} MiB")
    steps: dict[str, float] = {}
    for name, seconds in _STEP.findall(log.read_text(errors="replace")):
        steps[name] = round(steps.get(name, 0.0) + float(seconds), 1)
    story = json.loads(summary.read_text()) if summary.exists() else {}
    cohorts = {cohort: [f"{d.get('model')}: {d.get('status')}" for d in parts.get("promotion") or []]
               for cohort, parts in (story.get("cohorts") or {}).items()}
    data = (f"real extract {source.name}" if source is not None
            else f"synthetic data ({encounters or 'default'} encounters): no real extract given")
    return {"wall_seconds": m.wall_seconds, "peak_rss_mib": m.peak_rss_mib, "data": data,
            "note": f"{data}; one run, fresh data folder, every stage and cohort",
            "promotion": cohorts, "failures": story.get("failures"), "slowest_steps": dict(sorted(steps.items(), key=lambda kv: -kv[1])[:8])}
