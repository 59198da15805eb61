"""The bench results as a Markdown table and a plot of time and memory against rows."""

from __future__ import annotations

from pathlib import Path

from clinical_mlops.core.reporting import format_number

__all__ = ["markdown", "plot", "write"]


def _fmt(value: float | int | None, digits: int = 1) -> str:
    """Bench figures: thousands separators, ``digits`` decimals (one by default), whole numbers ≥ 1,000 without."""
    return format_number(value, digits, thousands=True)


def markdown(results: dict) -> str:
    """The whole run as Markdown: machine, overhead, comparison, scale table."""
    m = results["machine"]
    lines = [
        f"# clinical-mlops bench — {results['started']}",
        "",
        f"Machine: {m['cpus']} cores, {m['memory_gib']} GiB, Python {m['python']}; load average "
        f"{m['load_average_at_start']} at start, {m.get('load_average_at_end')} at end. "
        f"Commit {str(m.get('git_commit'))[:12]}{' (dirty)' if m.get('git_dirty') == 'true' else ''}. "
        f"Total {results.get('total_seconds')} s.",
    ]
    if "overhead" in results:
        o = results["overhead"]
        lines += [
            "",
            "## Orchestration overhead (default executor: in-process, SQLite instance)",
            "",
            f"- per asset step: **{o['per_step']['seconds_per_step']:.3f} s** "
            f"(median of {o['per_step']['repeats']}; a run with one step: {o['per_step']['seconds_per_run_with_one_step']:.2f} s)",
            f"- loading the project's Definitions ({o['load_definitions']['assets']} assets, every import): "
            f"{o['load_definitions']['seconds']:.2f} s in-process, {o['load_definitions']['process_wall_seconds']:.2f} s "
            f"for the whole process, {o['load_definitions']['peak_rss_mib']:.0f} MiB; heavy modules loaded at import: "
            f"{', '.join(o['load_definitions']['heavy_modules_loaded']) or 'none'}",
        ]
    if "comparison" in results:
        c = results["comparison"]
        lines += [
            "",
            f"## The pipeline against a bare script — {c['source']}, {_fmt(c['rows'])} rows, {len(c['extracts'])} extracts",
            "",
            "| variant | wall s | peak RSS MiB | candidate/test AUROC |",
            "|---|---:|---:|---:|",
        ]
        for name, v in c["variants"].items():
            auroc = v["extra"].get("candidate_auroc", v["extra"].get("test_auroc"))
            lines.append(f"| {name} | {_fmt(v['wall_seconds'])} | {_fmt(v['peak_rss_mib'], 0)} | {_fmt(auroc, 3)} |")
        r = c["ratios"]
        lines += ["", f"Ratios: orchestrated / bare **{r['orchestrated_vs_bare']}×**, plain / bare "
                      f"{r['plain_vs_bare']}×, orchestrated / plain **{r['orchestrated_vs_plain']}×**."]
    if results.get("scale"):
        lines += ["", "## Stages at scale (synthetic encounters; each stage its own process)", "",
                  "| stage | encounters | wall s | peak RSS MiB | rows processed | rows/s |",
                  "|---|---:|---:|---:|---:|---:|"]
        for s in results["scale"]:
            lines.append(f"| {s['stage']} | {_fmt(s['encounters'])} | {_fmt(s['wall_seconds'])} | "
                         f"{_fmt(s['peak_rss_mib'], 0)} | {_fmt(s['rows_processed'])} | {_fmt(s['rows_per_second'])} |")
        totals: dict[int, float] = {}
        peaks: dict[int, float] = {}
        for s in results["scale"]:
            totals[s["encounters"]] = totals.get(s["encounters"], 0.0) + s["wall_seconds"]
            peaks[s["encounters"]] = max(peaks.get(s["encounters"], 0.0), s["peak_rss_mib"])
        lines += ["", "| encounters | all stages, wall s | largest peak RSS MiB |", "|---:|---:|---:|"]
        lines += [f"| {_fmt(n)} | {_fmt(totals[n])} | {_fmt(peaks[n], 0)} |" for n in totals]
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
    ax_mem.axhline(8 * 1024, color="red", linestyle="--", linewidth=1, label="8 GiB budget")
    ax_mem.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"clinical-mlops bench {results['started']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(results: dict, out: Path) -> None:
    (out / "bench.md").write_text(markdown(results))
    plot(results, out / "bench.png")
