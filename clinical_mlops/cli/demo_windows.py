"""The demo's production windows: extracts scored one after another by each cohort's champion, then labels
that arrive after a delay — the early warning estimated from the scores before them, realised once they land.

The real clock runs: the demo compresses the policy's label delay (30 days for a 30-day readmission) to
``label_delay_seconds``. Before each window is scored the previous window's labels are due, so the first
monitoring pass — outcomes joined *as of* the newest window's last prediction, a moment already past —
sees every earlier window labelled and the newest estimated only; the second pass, once the newest
window's labels are due, realises it. The summary sets estimated beside realised per window, the
estimation error, and when the early warning fired against when the labels landed.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

from clinical_mlops.core.reporting import format_number

__all__ = ["DEMO_LABEL_DELAY_SECONDS", "MONITORING_ASSETS", "WindowClock", "play_windows", "print_windows", "query_rows",
           "window_statuses", "windows_story"]

DEMO_LABEL_DELAY_SECONDS = 2.0
"""The demo's label delay (the policy's ``monitoring.label_delay_days`` in production)."""

MONITORING_ASSETS = ("prediction_outcomes", "production_windows")
"""A cohort's assets a monitoring pass runs: the label join, then the windows (estimated, realised)."""


class WindowClock:
    """Keeps windows apart by the label delay: a window is scored only once the previous one's labels are due."""

    def __init__(self, delay_seconds: float) -> None:
        self.delay = float(delay_seconds)
        self.last_scored: float | None = None

    def before_scoring(self) -> None:
        if self.last_scored is not None:
            time.sleep(max(0.0, self.last_scored + self.delay - time.time()))

    def scored(self) -> None:
        self.last_scored = time.time()

    def until_labels_due(self) -> None:
        """Wait until the newest window's labels are due."""
        self.before_scoring()


def _newest_prediction(con, cohorts: list[str]) -> datetime | None:
    from clinical_mlops.core.warehouse import table_exists

    if not cohorts or not table_exists(con, "ml.batch_predictions"):
        return None
    marks = ", ".join("?" * len(cohorts))
    return con.execute(f"SELECT max(predicted_at) FROM ml.batch_predictions WHERE cohort IN ({marks})",
                       cohorts).fetchone()[0]


def _monitoring_pass(launch, cohorts: list[str], delay_days: float, as_of: datetime | None):
    import dagster as dg

    config = {"label_delay_days": delay_days}
    ops = {}
    for cohort in cohorts:
        ops[f"{cohort}__prediction_outcomes"] = {"config": {**config, "as_of": as_of.isoformat() if as_of else ""}}
        ops[f"{cohort}__production_windows"] = {"config": config}
    selection = [dg.AssetKey([c, a]) for c in cohorts for a in MONITORING_ASSETS]
    return launch.job("monitoring", asset_selection=selection, run_config={"ops": ops}, global_job=True)


def play_windows(launch, clock: WindowClock, cohorts: list[str], paths) -> dict:
    """Two monitoring passes over the scored windows (as of the newest prediction, then once its labels are
    due); returns the passes' times and, per cohort, each window's status after the first pass."""
    import contextlib

    from clinical_mlops.core import warehouse
    from clinical_mlops.monitoring.production import utc_now

    delay_days = clock.delay / 86_400
    with contextlib.closing(warehouse.connect(paths.warehouse, read_only=True)) as con:
        as_of = _newest_prediction(con, cohorts)
    if as_of is None:
        return {}
    first = _monitoring_pass(launch, cohorts, delay_days, as_of)
    first_at = utc_now()
    with contextlib.closing(warehouse.connect(paths.warehouse, read_only=True)) as con:
        before = window_statuses(con, cohorts)
    clock.until_labels_due()
    second = _monitoring_pass(launch, cohorts, delay_days, None)
    return {"label_delay_seconds": clock.delay, "first_pass": {"as_of": as_of, "finished_at": first_at,
                                                               "run_id": first.run_id},
            "second_pass": {"finished_at": utc_now(), "run_id": second.run_id}, "status_first_pass": before}


def window_statuses(con, cohorts: list[str]) -> dict[str, dict[str, str]]:
    """Per cohort, window id → estimated_only | labelled (has realised figures)."""
    out: dict[str, dict[str, str]] = {c: {} for c in cohorts}
    for row in query_rows(con, "SELECT cohort, window_id, bool_or(kind = 'realised') AS realised "
                               "FROM monitoring.window_metrics GROUP BY ALL ORDER BY ALL", []):
        if row["cohort"] in out:
            out[row["cohort"]][row["window_id"]] = "labelled" if row["realised"] else "estimated_only"
    return out


def query_rows(con, sql: str, params: list) -> list[dict]:
    """The rows of a query as JSON-ready dicts; none when a table it reads was never created (its step did
    not run)."""
    import duckdb

    try:
        cursor = con.execute(sql, params)
    except duckdb.CatalogException:
        return []
    columns = [d[0] for d in cursor.description]
    return [json.loads(json.dumps(dict(zip(columns, row)), default=str)) for row in cursor.fetchall()]


def windows_story(con, cohort: str, played: dict) -> list[dict]:
    """Each window of ``cohort``: estimated against realised (overall AUROC and recall, the widest estimated
    recall gap and its realised value), the estimation error, the early warning and when its labels landed."""
    figures = query_rows(con, """SELECT window_id, model_name, model_version, kind, attribute, "group", n, metric,
                                   estimate, lower, upper, status
                            FROM monitoring.window_metrics WHERE cohort = ? ORDER BY window_id""", [cohort])
    errors = query_rows(con, """SELECT window_id, metric, error FROM monitoring.estimation_errors
                                WHERE cohort = ? AND attribute = 'overall'""", [cohort])
    warnings = query_rows(con, """SELECT incident_id, opened_at, severity, "check" FROM monitoring.incidents
                                  WHERE cohort = ? AND "check" LIKE ? ORDER BY opened_at""",
                          [cohort, f"{cohort}/production_windows:%"])
    first = (played.get("status_first_pass") or {}).get(cohort, {})
    out = []
    for window in dict.fromkeys(f["window_id"] for f in figures):
        rows = [f for f in figures if f["window_id"] == window]

        def figure(kind: str, metric: str, attribute: str = "overall", group: str = "all") -> dict | None:
            return next((f for f in rows if (f["kind"], f["metric"], f["attribute"], f["group"])
                         == (kind, metric, attribute, group)), None)

        gaps = [f for f in rows if f["kind"] == "estimated" and f["metric"] == "recall_gap"
                and f["estimate"] is not None and f["estimate"] == f["estimate"]]
        widest = min(gaps, key=lambda f: f["estimate"], default=None)
        realised_gap = widest and figure("realised", "recall_gap", widest["attribute"], widest["group"])
        warning = next((w for w in warnings if w["check"].endswith(f"estimated_fairness_within_policy[{window}]")),
                       None)
        realised_incidents = [w for w in warnings if f"[{window}]" in w["check"] and w is not warning]
        out.append({
            "window_id": window, "model": f"{rows[0]['model_name']} v{rows[0]['model_version']}",
            "n": (figure("estimated", "recall") or {}).get("n"),
            "status_first_pass": first.get(window), "labelled": any(f["kind"] == "realised" for f in rows),
            **{f"{kind}_{metric}": _value(figure(kind, metric)) for kind in ("estimated", "realised")
               for metric in ("auroc", "recall")},
            "widest_estimated_gap": widest and {"group": f"{widest['attribute']}={widest['group']}",
                                                "estimate": widest["estimate"], "band": [widest["lower"], widest["upper"]],
                                                "status": widest["status"]},
            "realised_gap": realised_gap and {"estimate": realised_gap["estimate"],
                                              "ci": [realised_gap["lower"], realised_gap["upper"]],
                                              "verdict": realised_gap["status"]},
            "estimation_error": {e["metric"]: e["error"] for e in errors if e["window_id"] == window},
            "early_warning": warning and {"incident_id": warning["incident_id"], "opened_at": warning["opened_at"],
                                          "labels_landed_at": (played.get("second_pass") or {}).get("finished_at")
                                          if first.get(window) == "estimated_only" else None},
            "realised_incidents": [{"incident_id": w["incident_id"], "severity": w["severity"],
                                    "check": w["check"]} for w in realised_incidents],
        })
    return json.loads(json.dumps(out, default=str))


def _value(row: dict | None) -> float | None:
    return None if row is None or row["estimate"] is None or row["estimate"] != row["estimate"] else row["estimate"]


def _num(value, signed: bool = False) -> str:
    return format_number(None if value is None else float(value), sign=signed)


def print_windows(cohort_story: dict, played: dict) -> None:
    """The windows lines of the demo's summary for one cohort."""
    windows = cohort_story.get("windows") or []
    if not windows:
        return
    print(f"    production windows (label delay compressed to {played.get('label_delay_seconds', '?')} s; "
          "first pass as of the newest window's last prediction, second once its labels were due):")
    for w in windows:
        extract = w["window_id"].split(":")[1] if w["window_id"].startswith("extract:") else w["window_id"]
        print(f"      {extract} ({w['model']}, n = {w['n']:,}): before labels {w['status_first_pass'] or '—'}; "
              f"AUROC est {_num(w['estimated_auroc'])} / real {_num(w['realised_auroc'])}, "
              f"recall est {_num(w['estimated_recall'])} / real {_num(w['realised_recall'])}; "
              f"error AUROC {_num(w['estimation_error'].get('auroc'), True)}, "
              f"recall {_num(w['estimation_error'].get('recall'), True)}")
        gap, real = w.get("widest_estimated_gap"), w.get("realised_gap")
        if gap:
            print(f"        widest estimated recall gap {gap['group']} {_num(gap['estimate'], True)} "
                  f"[{_num(gap['band'][0], True)}, {_num(gap['band'][1], True)}] ({gap['status']})"
                  + (f"; realised {_num(real['estimate'], True)} [{_num(real['ci'][0], True)}, "
                     f"{_num(real['ci'][1], True)}] ({real['verdict']})" if real else ""))
        warning = w.get("early_warning")
        if warning:
            landed = warning.get("labels_landed_at")
            lead = ""
            if landed:
                seconds = (datetime.fromisoformat(landed) - datetime.fromisoformat(warning["opened_at"])).total_seconds()
                lead = f"; labels landed {seconds:.1f} s later (in production: the label delay)"
            print(f"        EARLY WARNING {warning['incident_id']} at {warning['opened_at']} before its labels{lead}")
        for incident in w.get("realised_incidents", []):
            print(f"        realised: incident {incident['incident_id']} ({incident['severity']})")
