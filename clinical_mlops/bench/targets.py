"""Issue 16's targets as one table: what, measured, yardstick (measured in the same run), ratio, target, met?

:func:`targets` reads the results of one ``clinical-mlops bench`` run (see :mod:`.run`) and gives
one row per target, always every row: a part that was not measured (skipped, or its module not
installed yet) says so and its ``met`` is ``None``. The yardstick is the like-for-like bare script
(:mod:`.bare`, the median of its runs in this run) unless the row says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SCALE_STAGES", "SCALE_TARGET_ENCOUNTERS", "Target", "TARGETS", "targets"]

SCALE_TARGET_ENCOUNTERS = 10_000_000
SCALE_STAGES = ("land", "validate", "features", "split", "drift_statistics", "fairness_aggregates", "batch_scoring")
"""The stages the 10M target counts (training and evaluation are not in it)."""


@dataclass(frozen=True)
class Target:
    key: str
    what: str
    target: str
    limit: float
    direction: str
    """``le`` (ratio or seconds at most ``limit``) or ``ge`` (ratio at least ``limit``)."""


TARGETS: tuple[Target, ...] = (
    Target("graph", "readmission graph, land → evaluation (Dagster runs)", "≤ 3× bare", 3.0, "le"),
    Target("demo", "whole `clinical-mlops demo --source`, fresh data folder", "≤ 7× bare", 7.0, "le"),
    Target("land", "`clinical-mlops land` of a 5,000-row extract (fresh workspace)", "≤ 0.5× bare", 0.5, "le"),
    Target("definitions", "loading the Definitions (whole process)", "≤ 0.35× bare", 0.35, "le"),
    Target("help", "`clinical-mlops --help`", "< 0.5 s", 0.5, "le"),
    Target("scale", "10M encounters: land, validate, features, split, drift, fairness, scoring",
           "≤ 480 s and ≤ 4,096 MiB peak", 480.0, "le"),
    Target("serving_1", "scoring service, concurrency 1 (req/s)", "≥ 2× mlflow models serve", 2.0, "ge"),
    Target("serving_8", "scoring service, concurrency 8 (req/s)", "≥ 2× mlflow models serve", 2.0, "ge"),
)
SCALE_PEAK_MIB = 4096.0


def _met(value: float | None, target: Target) -> bool | None:
    if value is None:
        return None
    return value <= target.limit if target.direction == "le" else value >= target.limit


def _ratio(measured: float | None, yardstick: float | None) -> float | None:
    if measured is None or not yardstick:
        return None
    return round(measured / yardstick, 3)


def _row(target: Target, measured: float | None, unit: str, yardstick: float | None, yardstick_name: str,
         note: str = "", *, ratio: float | None = None, met: bool | None | str = "judge",
         peak_mib: float | None = None) -> dict:
    """One row; ``met`` is judged from the ratio (``help``: the seconds) unless given (None: not judged)."""
    ratio = _ratio(measured, yardstick) if ratio is None else ratio
    if met == "judge":
        met = None if measured is None else _met(measured if target.key == "help" else ratio, target)
    return {"key": target.key, "what": target.what, "measured": measured, "unit": unit, "peak_rss_mib": peak_mib,
            "yardstick": yardstick, "yardstick_name": yardstick_name, "ratio": ratio, "target": target.target,
            "met": met if measured is not None else None, "note": note}


def _wall(part: dict | None) -> float | None:
    return None if not part or part.get("not_measured") else part.get("wall_seconds")


def _scale_row(target: Target, results: dict) -> dict:
    stages = [s for s in results.get("scale") or [] if s["stage"] in SCALE_STAGES]
    if not stages:
        why = f"not measured: {results['scale_error']}" if results.get("scale_error") else "not measured (scale skipped)"
        return _row(target, None, "s", None, "plain DuckDB scan", why)
    size = max(s["encounters"] for s in stages)
    ours = [s for s in stages if s["encounters"] == size]
    total = round(sum(s["wall_seconds"] for s in ours), 1)
    peak = max(s["peak_rss_mib"] for s in ours)
    scan = next((s for s in results["scale"] if s["stage"] == "duckdb_scan" and s["encounters"] == size), None)
    scan_wall = scan["wall_seconds"] if scan else None
    missing = sorted(set(SCALE_STAGES) - {s["stage"] for s in ours})
    note = f"{size:,} encounters; peak {peak:,.0f} MiB in one process; ratio = stages / one plain DuckDB scan of the files"
    met = None
    if size == SCALE_TARGET_ENCOUNTERS and not missing:
        met = total <= target.limit and peak <= SCALE_PEAK_MIB
    else:
        note += f" — not the 10M target size{'; missing ' + ', '.join(missing) if missing else ''}: met not judged"
    return _row(target, total, "s", scan_wall, "plain DuckDB scan", note, met=met, peak_mib=peak)


def _serving_rows(results: dict) -> list[dict]:
    serving = results.get("serving") or {}
    rows = []
    for target in (t for t in TARGETS if t.key.startswith("serving_")):
        concurrency = target.key.split("_")[1]
        entry = (serving.get("concurrency") or {}).get(concurrency) or {}
        ours, theirs = entry.get("ours_rps"), entry.get("mlflow_rps")
        if serving.get("not_measured") or ours is None:
            rows.append(_row(target, None, "req/s", None, "mlflow models serve",
                             serving.get("not_measured") or "not measured"))
            continue
        durability = serving.get("durability") or {}
        lost = durability.get("lost")
        note = (f"kill -9: {durability.get('acknowledged')} acknowledged, {lost} lost, hash chain "
                f"{'verified' if durability.get('chain_ok', True) else 'BROKEN'}") if durability else ""
        ratio = _ratio(ours, theirs)
        met = _met(ratio, target)
        if met is not None and (lost not in (None, 0) or durability.get("chain_ok") is False):
            met = False
        rows.append(_row(target, ours, "req/s", theirs, "mlflow models serve", note, ratio=ratio, met=met))
    return rows


def targets(results: dict) -> list[dict]:
    """Every target's row for one bench run's ``results`` (see the module docstring)."""
    by_key = {t.key: t for t in TARGETS}
    comparison = results.get("comparison") or {}
    bare = comparison.get("bare_wall_seconds")
    data = comparison.get("source_note", "")
    rows = []
    graph = comparison.get("graph") or {}
    rows.append(_row(by_key["graph"], graph.get("wall_seconds"), "s", bare, "like-for-like bare script",
                     data if graph else "not measured (comparison skipped)", peak_mib=graph.get("peak_rss_mib")))
    demo = results.get("demo") or {}
    rows.append(_row(by_key["demo"], _wall(demo), "s", bare, "like-for-like bare script",
                     demo.get("note") or demo.get("not_measured", "not measured (demo skipped)"),
                     peak_mib=demo.get("peak_rss_mib")))
    startup = results.get("startup") or {"not_measured": "not measured (start-up skipped)"}
    land = startup.get("land") if not startup.get("not_measured") else None
    rows.append(_row(by_key["land"], _wall(land), "s", bare, "like-for-like bare script",
                     startup.get("not_measured", f"median of {startup.get('repeats')} fresh-workspace run(s)"),
                     peak_mib=(land or {}).get("peak_rss_mib")))
    definitions = (results.get("overhead") or {}).get("load_definitions") or {}
    rows.append(_row(by_key["definitions"], definitions.get("process_wall_seconds"), "s", bare,
                     "like-for-like bare script", "" if definitions else "not measured (overhead skipped)",
                     peak_mib=definitions.get("peak_rss_mib")))
    help_ = startup.get("help") if not startup.get("not_measured") else None
    rows.append(_row(by_key["help"], _wall(help_), "s", None, "absolute",
                     startup.get("not_measured", f"median of {startup.get('repeats')} fresh process(es)")))
    rows.append(_scale_row(by_key["scale"], results))
    rows.extend(_serving_rows(results))
    quick = bool(results.get("quick"))
    return [{**row, "quick": quick} for row in rows]
