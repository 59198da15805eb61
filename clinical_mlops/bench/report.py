"""The bench results as a Markdown table and a plot of time and memory against rows."""

from __future__ import annotations

from pathlib import Path

from clinical_mlops.bench import targets
from clinical_mlops.core.reporting import format_number

__all__ = ["markdown", "plot", "targets_table", "write"]


def _fmt(value: float | int | None, digits: int = 1) -> str:
    """Bench figures: thousands separators, ``digits`` decimals (one by default), whole numbers ≥ 1,000 without."""
    return format_number(value, digits, thousands=True)


def _met(row: dict) -> str:
    return {True: "yes", False: "**no**", None: "—"}[row["met"]]


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "not measured"
    return f"{_fmt(value, 2 if value < 10 else 1)} {unit}"


def targets_table(rows: list[dict]) -> list[str]:
    """Issue 16's targets: what, measured, yardstick, ratio, target, met?, note."""
    lines = ["| what | measured | yardstick (same run) | ratio | target | met? | note |",
             "|---|---:|---:|---:|---|---|---|"]
    for row in rows:
        measured = _value(row["measured"], row["unit"])
        if row.get("peak_rss_mib") is not None and row["measured"] is not None:
            measured += f", {_fmt(row['peak_rss_mib'], 0)} MiB"
        yardstick = ("—" if row["yardstick_name"] == "absolute" else
                     f"{row['yardstick_name']}: {_value(row['yardstick'], row['unit'])}")
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.2f}×"
        lines.append(f"| {row['what']} | {measured} | {yardstick} | {ratio} | {row['target']} | {_met(row)}"
                     f"{' (quick)' if row.get('quick') else ''} | {row['note']} |")
    return lines


def _startup(s: dict) -> list[str]:
    if s.get("not_measured"):
        return ["", f"## Start-up: {s['not_measured']}"]
    lines = ["", f"## Start-up (median of {s.get('repeats')} fresh processes)", ""]
    for key in ("help", "land", "land_again"):
        if key in s:
            lines.append(f"- {key}: {_fmt(s[key]['wall_seconds'], 2)} s "
                         f"(runs {s[key].get('samples_wall_seconds')}), {_fmt(s[key].get('peak_rss_mib'), 0)} MiB")
    return lines


def _comparison(c: dict) -> list[str]:
    lines = ["", f"## The graph against the bare script — {c['source_note']}, {_fmt(c['rows'])} rows, "
                 f"{len(c['extracts'])} extracts", "",
             "| variant | wall s (median) | runs, wall s | peak RSS MiB | candidate/test AUROC |",
             "|---|---:|---|---:|---:|"]
    for name, v in c["variants"].items():
        auroc = v["extra"].get("candidate_auroc", v["extra"].get("test_auroc"))
        lines.append(f"| {name} | {_fmt(v['wall_seconds'])} | {v.get('samples_wall_seconds', '')} | "
                     f"{_fmt(v['peak_rss_mib'], 0)} | {_fmt(auroc, 4)} |")
    a = c.get("auroc") or {}
    lines += ["", "Ratios to the like-for-like bare script: " + ", ".join(
        f"{k.removesuffix('_vs_bare')} **{v}×**" for k, v in c["ratios"].items())
        + f". Candidate AUROC minus bare-script AUROC: {a.get('difference')}."]
    phases = c["variants"]["bare_script"]["extra"].get("seconds_by_phase")
    if phases:
        lines.append("Bare script by phase (s): " + ", ".join(f"{k} {v}" for k, v in phases.items()) + ".")
    return lines


def _demo(d: dict) -> list[str]:
    if d.get("not_measured"):
        return ["", f"## Whole demo: {d['not_measured']}"]
    lines = ["", f"## Whole `clinical-mlops demo` — {d['data']}", "",
             f"{_fmt(d['wall_seconds'])} s wall, {_fmt(d['peak_rss_mib'], 0)} MiB peak. Slowest steps (s, summed "
             "over cohorts and extracts): " + ", ".join(f"{k} {v}" for k, v in d.get("slowest_steps", {}).items())
             + "."]
    for cohort, decisions in (d.get("promotion") or {}).items():
        lines.append(f"- {cohort}: {'; '.join(decisions) or 'no decision'}")
    return lines


def _serving(s: dict) -> list[str]:
    if s.get("not_measured"):
        return ["", f"## Scoring service: {s['not_measured']}"]
    lines = ["", "## Scoring service beside `mlflow models serve` (same model, same run)", ""]
    for level, entry in (s.get("concurrency") or {}).items():
        lines.append(f"- concurrency {level}: ours {entry.get('ours_rps')} req/s, mlflow {entry.get('mlflow_rps')} req/s")
    if s.get("durability"):
        lines.append(f"- kill -9 under load: {s['durability']}")
    return lines


def markdown(results: dict) -> str:
    """The whole run as Markdown: the targets table first, then each part's own figures."""
    m = results["machine"]
    lines = [
        f"# clinical-mlops bench{' --quick' if results.get('quick') else ''} — {results['started']}",
        "",
        f"Machine: {m['cpus']} cores, {m['memory_gib']} GiB, Python {m['python']}; load average "
        f"{m['load_average_at_start']} at start, {m.get('load_average_at_end')} at end. "
        f"Commit {str(m.get('git_commit'))[:12]}{' (dirty)' if m.get('git_dirty') == 'true' else ''}. "
        f"Total {results.get('total_seconds')} s.",
    ]
    if results.get("quick"):
        lines += ["", "**Quick run**: synthetic data, small sizes, one repeat — a regression guard; the targets are "
                      "judged on the full run."]
    if results.get("targets"):
        lines += ["", "## Issue 16's targets (ratios measured in this run)", "", *targets_table(results["targets"])]
    if "overhead" in results:
        o = results["overhead"]
        lines += ["", "## Orchestration overhead (default executor: in-process, SQLite instance)", ""]
        if "per_step" in o:
            lines.append(f"- per asset step: **{o['per_step']['seconds_per_step']:.3f} s** "
                         f"(median of {o['per_step']['repeats']}; a run with one step: "
                         f"{o['per_step']['seconds_per_run_with_one_step']:.2f} s)")
        lines += [
            f"- loading the project's Definitions ({o['load_definitions']['assets']} assets, every import): "
            f"{o['load_definitions']['seconds']:.2f} s in-process, {o['load_definitions']['process_wall_seconds']:.2f} s "
            f"for the whole process, {o['load_definitions']['peak_rss_mib']:.0f} MiB; heavy modules loaded at import: "
            f"{', '.join(o['load_definitions']['heavy_modules_loaded']) or 'none'}",
        ]
    if "startup" in results:
        lines += _startup(results["startup"])
    if "comparison" in results:
        lines += _comparison(results["comparison"])
    if "demo" in results:
        lines += _demo(results["demo"])
    if results.get("scale"):
        lines += ["", "## Stages at scale (synthetic encounters; each stage its own process)", "",
                  "| stage | encounters | wall s | peak RSS MiB | rows processed | rows/s |",
                  "|---|---:|---:|---:|---:|---:|"]
        for s in results["scale"]:
            lines.append(f"| {s['stage']} | {_fmt(s['encounters'])} | {_fmt(s['wall_seconds'])} | "
                         f"{_fmt(s['peak_rss_mib'], 0)} | {_fmt(s['rows_processed'])} | {_fmt(s['rows_per_second'])} |")
        lines += ["", "| encounters | issue 16's 7 stages, wall s | their largest peak RSS MiB | every stage but "
                      "generate, wall s | plain DuckDB scan, wall s |", "|---:|---:|---:|---:|---:|"]
        for n in dict.fromkeys(s["encounters"] for s in results["scale"]):
            at = [s for s in results["scale"] if s["encounters"] == n]
            counted = [s for s in at if s["stage"] in targets.SCALE_STAGES]
            every = [s for s in at if s["stage"] not in ("generate", "duckdb_scan")]
            scan = next((s["wall_seconds"] for s in at if s["stage"] == "duckdb_scan"), None)
            lines.append(f"| {_fmt(n)} | {_fmt(sum(s['wall_seconds'] for s in counted))} | "
                         f"{_fmt(max((s['peak_rss_mib'] for s in counted), default=None), 0)} | "
                         f"{_fmt(sum(s['wall_seconds'] for s in every))} | {_fmt(scan)} |")
    if "serving" in results:
        lines += _serving(results["serving"])
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> Path | None:
    """Time and peak memory of each stage against encounters (log-log); None without scale results."""
    scale = results.get("scale") or []
    if not scale:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    for stage in dict.fromkeys(s["stage"] for s in scale):
        points = sorted((s["encounters"], s["wall_seconds"], s["peak_rss_mib"]) for s in scale if s["stage"] == stage)
        xs = [p[0] for p in points]
        ax_time.plot(xs, [p[1] for p in points], marker="o", label=stage)
        ax_mem.plot(xs, [p[2] for p in points], marker="o", label=stage)
    for ax, title, unit in ((ax_time, "wall time", "seconds"), (ax_mem, "peak RSS", "MiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("synthetic encounters")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_mem.axhline(4 * 1024, color="red", linestyle="--", linewidth=1, label="4 GiB target (issue 16)")
    ax_mem.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"clinical-mlops bench {results['started']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(results: dict, out: Path) -> None:
    (out / "bench.md").write_text(markdown(results))
    plot(results, out / "bench.png")
