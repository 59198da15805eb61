"""``clinical-mlops demo``: the whole governed graph on synthetic data or the UCI release.

The demo launches jobs; the order inside each is the asset graph's (fairness before change control
before promotion before scoring), exactly what "materialize" in the Dagster UI does:

1. the training extracts land and are validated, one ``ingestion_job`` run each;
2. ``training_job``: features, split, baseline and candidate, evaluation;
3. ``drift_job`` on the newest training extract (change control reads the newest drift report);
4. ``release_job``: fairness audit, root cause, mitigation, model card, change control, promotion;
5. the later extracts arrive (synthetic: a clean window, a shifted population, a window with a recording
   bias): they land, the features are rebuilt;
6. production windows, one per later extract: its drift report and external evaluation, then
   ``scoring_job`` scores it with each cohort's champion only — a cohort with no champion is refused;
7. monitoring (``cli.demo_windows``): outcomes joined as of the newest prediction (estimated before its
   labels, the early warning), then again once its labels are due (realised, estimation error).

The summary (and ``--summary-json``) tells the story per cohort: the promotion status and its reasons,
the failing groups with gap and interval, the incidents opened, the drift verdict per extract, and
the exact command that approves a model waiting for approval.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from datetime import UTC, datetime

from clinical_mlops.cli.demo_extracts import SYNTHETIC_SOURCE, DemoExtracts, choose_source, prepare_extracts
from clinical_mlops.cli.demo_windows import DEMO_LABEL_DELAY_SECONDS, WindowClock, play_windows, print_windows, query_rows, windows_story
from clinical_mlops.core.reporting import format_number
from clinical_mlops.core.settings import default_paths

__all__ = ["SYNTHETIC_SOURCE", "DemoExtracts", "choose_source", "cmd_demo", "prepare_extracts", "run_landed", "story"]

UI_HINT = (
    "Dagster UI: make ui  → http://127.0.0.1:3000 (assets, lineage, checks)\n"
    "MLflow UI: started by make ui → http://127.0.0.1:5000 (runs, registered models)"
)
NO_CHAMPION = "no champion for"
"""How scoring's refusal starts when a cohort has no champion: an outcome of the gate, not a failure."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Launcher:
    """Runs one source's jobs on the project instance, records each in the ledger, collects what went wrong."""

    def __init__(self, source: str) -> None:
        from clinical_mlops.cli import runs
        from clinical_mlops.defs.jobs import job_name

        self.runs, self.source, self.job_name = runs, source, job_name
        self.instance = runs.project_instance()
        self.defs = runs.load_definitions()
        self.failures: list[str] = []
        self.refusals: list[str] = []

    def job(self, stage: str, *, partition_key: str | None = None, expect_refusal: str | None = None,
            asset_selection=None, run_config: dict | None = None, global_job: bool = False):
        from clinical_mlops.cli import errors as cli_errors
        from clinical_mlops.defs.audit.sensors import record_run

        name = self.job_name(stage, None if global_job else self.source)
        outcome = self.runs.run_job(self.defs, self.instance, name, partition_key=partition_key,
                                    asset_selection=asset_selection, run_config=run_config)
        record_run(self.instance, outcome.run_id)
        for raw in outcome.step_errors or ([outcome.error] if outcome.error else []):
            error = cli_errors.without_dagster_names(raw) or "the step failed"
            if expect_refusal and error.startswith(expect_refusal):
                self.refusals.append(error)
            else:
                self.failures.append(f"{name}{f' ({partition_key})' if partition_key else ''}: {error}")
        return outcome

    def land(self, extract_id: str):
        self.runs.register_extracts(self.instance, self.source, [extract_id])
        return self.job("ingestion", partition_key=extract_id)


def _extract_row(source: str, extract_id: str, outcome) -> dict:
    raw = outcome.metadata.get(f"{source}/raw_extract", {})
    valid = outcome.metadata.get(f"{source}/validated_extract", {})
    return {"extract_id": extract_id, "status": raw.get("status"), "rows_landed": raw.get("rows_landed"),
            "rows_valid": valid.get("rows_valid"), "rows_quarantined": valid.get("rows_quarantined"),
            "run_id": outcome.run_id, "failed_checks": outcome.failed_checks}


def cmd_demo(args: argparse.Namespace) -> int:
    from clinical_mlops.cli.preflight import preflight

    started = time.perf_counter()
    began = datetime.now(UTC).replace(tzinfo=None)
    checked = preflight()
    if checked.error:
        _say(f"error: {checked.error}")
        return 2
    path = args.source.resolve() if args.source else None
    if path is not None and not path.is_file():
        _say(f"error: {path} is not a file")
        return 2
    try:
        source = choose_source(checked, path, getattr(args, "source_name", None))
    except ValueError as error:
        _say(f"error: {path.name if path else 'demo'}: {error}")
        return 2
    paths = default_paths()
    extracts = prepare_extracts(path, args.seed, args.encounters, args.extracts, paths.landing_dir / source.name,
                                args.bias, args.shift, source=source)
    summary: dict = {"source": source.name, "file": str(path) if path else "synthetic", "seed": args.seed,
                     "bias": args.bias, "contract_sha256": source.sha256, "extracts": []}
    launch = _Launcher(source.name)
    stages = len(extracts.training) + 3 + len(extracts.later) + max(len(extracts.later), 1)
    progress = iter(range(1, stages + 1))
    for extract in extracts.training:
        _say(f"[{next(progress)}/{stages}] Landing and validating {extract.name} ({source.name})")
        summary["extracts"].append(_extract_row(source.name, extract.name, launch.land(extract.name)))
    return _play(launch, summary, [p.name for p in extracts.training], [p.name for p in extracts.later], progress,
                 stages, started, began, paths, args, land_later=True)


def run_landed(args: argparse.Namespace, checked, landed: dict[str, list[dict]]) -> int:
    """``clinical-mlops run``: per source, re-validate extracts validated under an older contract, then the
    sequence of :func:`_play` on what has landed (the external-site extracts evaluated, never trained on)."""
    from clinical_mlops.core import warehouse
    from clinical_mlops.features import build as features
    from clinical_mlops.sources import tables

    code = 0
    for name, extracts in landed.items():
        started, began = time.perf_counter(), datetime.now(UTC).replace(tzinfo=None)
        source = checked.sources[name]
        specs = checked.cohorts_of(name)
        if args.cohort is not None:
            specs = [s for s in specs if s.name == args.cohort]
        if not specs:
            _say(f"{name}: no cohort is built on this source (add one under cohorts/); nothing to run")
            continue
        paths = default_paths()
        with contextlib.closing(warehouse.connect(paths.warehouse, read_only=True)) as con:
            external = set(features.external_extracts(con, specs[0]))
            quarantined = dict(con.execute(
                f"SELECT extract_id, count(*) FROM {tables.quarantine_table(name)} GROUP BY 1").fetchall())
        launch = _Launcher(name)
        summary: dict = {"source": name, "file": "landed extracts", "contract_sha256": source.sha256, "extracts": []}
        stale = [e["extract_id"] for e in extracts if e["validated_contract_sha256"] != source.sha256]
        for extract in extracts:
            extract_id = extract["extract_id"]
            if extract_id in stale:
                _say(f"{extract_id}: validated under another contract version; validating again ({name})")
                summary["extracts"].append(_extract_row(name, extract_id, launch.land(extract_id)))
                continue
            q = int(quarantined.get(extract_id, 0))
            summary["extracts"].append({"extract_id": extract_id, "status": "landed",
                                        "rows_landed": int(extract["rows_landed"]),
                                        "rows_valid": int(extract["rows_landed"]) - q, "rows_quarantined": q,
                                        "run_id": None, "failed_checks": []})
        training = [e["extract_id"] for e in extracts if e["extract_id"] not in external]
        later = [e["extract_id"] for e in extracts if e["extract_id"] in external]
        stages = 3 + max(len(later), 1)
        selection = _selection(specs) if args.cohort is not None else None
        code |= _play(launch, summary, training, later, iter(range(1, stages + 1)), stages, started, began, paths,
                      args, land_later=False, selection=selection, cohorts=[s.name for s in specs])
    return code


def _selection(specs) -> list:
    import dagster as dg

    return [dg.AssetKey([s.name, asset]) for s in specs for asset in COHORT_ASSETS]


TRAIN = ("encounter_features", "training_split", "baseline_model", "candidate_model", "model_evaluation")
RELEASE = ("fairness_report", "fairness_root_cause", "mitigated_model", "model_card", "change_control_report",
           "promotion")
PER_EXTRACT = ("drift_report", "external_evaluation")
SCORING = ("batch_predictions",)
COHORT_ASSETS = TRAIN + RELEASE + PER_EXTRACT + SCORING
"""A cohort's assets the sequence runs, by stage (``run --cohort`` narrows each stage's job to them)."""


def _subset(selection, job_assets) -> list | None:
    return None if selection is None else [k for k in selection if k.path[-1] in job_assets]


def _play(launch: _Launcher, summary: dict, training: list[str], later: list[str], progress, stages: int,
          started: float, began: datetime, paths, args, *, land_later: bool, selection=None,
          cohorts: list[str] | None = None) -> int:
    """The governed sequence on one source: train on ``training``, drift of the newest, the release path;
    then the ``later`` extracts (landed now when ``land_later``) as production windows, each with its drift,
    external evaluation and batch scoring by each cohort's champion only (no later extract: the newest
    training extract is scored); then the two monitoring passes of :func:`play_windows`."""
    _say(f"[{next(progress)}/{stages}] Features, split, models and evaluation for the cohorts of {launch.source}")
    training_run = launch.job("training", asset_selection=_subset(selection, TRAIN))
    summary["training_run_id"] = training_run.run_id
    summary["models"] = _model_summary(training_run.metadata)
    if not training_run.success:
        return _finish(summary, launch, started, began, paths, args, cohorts)
    newest = training[-1] if training else None
    _say(f"[{next(progress)}/{stages}] Drift of {newest}; then fairness, root cause, mitigation, model card, "
         "change control and the promotion gate (the graph's order)")
    if newest is not None:
        launch.job("drift", partition_key=newest, asset_selection=_subset(selection, PER_EXTRACT))
    release_run = launch.job("release", asset_selection=_subset(selection, RELEASE))
    summary["release_run_id"] = release_run.run_id
    summary["root_cause"] = {key.partition("/")[0]: values.get("conclusions", {})
                             for key, values in release_run.metadata.items() if key.endswith("/fairness_root_cause")}
    if land_later:
        for extract in later:
            _say(f"[{next(progress)}/{stages}] A later extract arrives: {extract} — landing and validation")
            summary["extracts"].append(_extract_row(launch.source, extract, launch.land(extract)))
    if later:
        launch.job("features", asset_selection=_subset(selection, ("encounter_features",)))
    clock = WindowClock(getattr(args, "label_delay_seconds", DEMO_LABEL_DELAY_SECONDS))
    for extract in later or ([newest] if newest else []):
        _say(f"[{next(progress)}/{stages}] Production window {extract}: drift, external evaluation, batch scoring "
             "with each cohort's champion")
        if later:
            launch.job("drift", partition_key=extract, asset_selection=_subset(selection, PER_EXTRACT))
        clock.before_scoring()
        launch.job("scoring", partition_key=extract, expect_refusal=NO_CHAMPION,
                   asset_selection=_subset(selection, SCORING))
        clock.scored()
    if later or newest:
        _say(f"[{next(progress)}/{stages}] Monitoring windows: outcomes joined as of the newest prediction "
             f"(estimated before its labels), then again once its labels are due ({clock.delay:g} s later)")
        from clinical_mlops.features.cohort import load_all_cohorts

        names = cohorts or [s.name for s in load_all_cohorts() if s.source == launch.source]
        summary["windows_played"] = play_windows(launch, clock, names, paths)
    return _finish(summary, launch, started, began, paths, args, cohorts)


def _model_summary(metadata: dict[str, dict]) -> dict[str, dict]:
    summary: dict[str, dict] = {}
    for key, values in metadata.items():
        cohort, _, asset = key.partition("/")
        if asset in ("baseline_model", "candidate_model"):
            summary.setdefault(cohort, {})[asset.removesuffix("_model")] = {
                k: values[k] for k in ("registered_model", "model_version", "mlflow_run_id", "test_auroc",
                                       "operating_threshold", "train_rows", "test_rows") if k in values
            }
        elif asset == "model_evaluation":
            summary.setdefault(cohort, {})["evaluation"] = {
                k: v for k, v in values.items()
                if isinstance(v, (int, float, str)) and not k.endswith(("_plots", "_by_group"))
            }
    return summary


def story(con, since: datetime, cohorts: list[str] | None = None) -> dict[str, dict]:
    """Per cohort (of ``cohorts``, default all): promotion status and reasons, failing groups, incidents opened
    since ``since``, drift verdict per extract, external evaluations, the batch scoring outcome, and the
    command that approves a waiting model."""
    from clinical_mlops.features.cohort import load_all_cohorts
    from clinical_mlops.fairness import audit as fairness

    out: dict[str, dict] = {}
    for spec in load_all_cohorts():
        cohort = spec.name
        if cohorts is not None and cohort not in cohorts:
            continue
        fair = fairness.summary_for(con, cohort)
        out[cohort] = {
            "promotion": _decisions(con, cohort, since),
            "failing_groups": [
                {"model": (fair.get(role) or {}).get("model"), **failing}
                for role in ("candidate", "mitigated") for failing in (fair.get(role) or {}).get("failing", [])
            ],
            "fairness": fair,
            "incidents_opened": query_rows(con, """SELECT incident_id, severity, owner, due_by, model, "check", status
                                              FROM monitoring.incidents WHERE cohort = ? AND opened_at >= ?
                                              ORDER BY opened_at""", [cohort, since]),
            "drift": {r["extract_id"]: r for r in query_rows(con, """
                SELECT extract_id, dataset_drift, drift_share, features_drifted, features_tested, prediction_drift,
                       reference_kind, reference_model, reference_version
                FROM monitoring.drift_runs WHERE cohort = ? AND computed_at >= ? ORDER BY computed_at""",
                [cohort, since])},
            "external_evaluation": query_rows(con, """
                SELECT extract_id, relation, model_name, model_version, model_kind, n, n_positive,
                       round(estimate, 3) AS auroc, round(lower, 3) AS auroc_lower, round(upper, 3) AS auroc_upper
                FROM ml.external_evaluations WHERE cohort = ? AND evaluated_at >= ? AND attribute = 'overall'
                  AND metric = 'auroc' ORDER BY evaluated_at""", [cohort, since]),
            "scoring": query_rows(con, """SELECT extract_id, model_name, model_version, model_source, count(*) AS rows,
                                            sum(CAST(flagged AS INTEGER)) AS flagged
                                     FROM ml.batch_predictions WHERE cohort = ? AND predicted_at >= ?
                                     GROUP BY ALL ORDER BY extract_id""", [cohort, since]),
        }
    return out


def _decisions(con, cohort: str, since: datetime) -> list[dict]:
    """The promotion decisions of this demo, newest per model; status promoted | blocked | pending_approval."""
    rows = query_rows(con, "SELECT * FROM audit.promotion_decisions WHERE cohort = ? AND decided_at >= ? "
                      "ORDER BY decided_at", [cohort, since])
    newest: dict[str, dict] = {}
    for row in rows:
        criteria = json.loads(row.get("criteria_json") or "[]")
        status = row.get("status") or ("promoted" if row.get("promoted") else "blocked")
        newest[row["model_name"]] = {
            "model": f"{row['model_name']} v{row['challenger_version']}",
            "status": status,
            "reasons": [f"{c['name']}: {c['status']}{' (waived)' if c.get('waiver_id') else ''} — {c['reason']}"
                        for c in criteria if c["status"] != "pass"],
            "decision": row.get("reason"),
            "next_command": row.get("next_command"),
        }
    return list(newest.values())


def _finish(summary: dict, launch: _Launcher, started: float, began: datetime, paths, args,
            cohorts: list[str] | None = None) -> int:
    from clinical_mlops.core import warehouse
    from clinical_mlops.features.cohort import load_all_cohorts

    if cohorts is None:
        cohorts = [s.name for s in load_all_cohorts() if s.source == launch.source]
    with contextlib.closing(warehouse.connect(paths.warehouse)) as con:
        summary["cohorts"] = story(con, began, cohorts)
        for cohort, told in summary["cohorts"].items():
            told["windows"] = windows_story(con, cohort, summary.get("windows_played") or {})
    summary["refused"] = launch.refusals
    summary["failures"] = launch.failures
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    summary["warehouse"] = str(paths.warehouse)
    summary["mlflow_tracking_uri"] = paths.mlflow_tracking_uri
    _print_summary(summary)
    if args.summary_json:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(json.dumps(summary, indent=2, default=str))
    return 1 if launch.failures else 0


def _num(value) -> str:
    return format_number(None if value is None else float(value))


def _ci(values: list) -> str:
    return "[" + ", ".join(format_number(None if v is None else float(v), sign=True) for v in values) + "]"


def _print_summary(summary: dict) -> None:
    landed = sum(e["rows_landed"] or 0 for e in summary["extracts"])
    quarantined = sum(e["rows_quarantined"] or 0 for e in summary["extracts"])
    print(f"\nclinical_mlops — source {summary['source']} (contract {summary.get('contract_sha256', '')[:12]}) — "
          f"{summary.get('file', '')} — {summary['wall_seconds']} s")
    print(f"  extracts: {len(summary['extracts'])}; rows landed {landed:,}; quarantined {quarantined:,}")
    for cohort, parts in summary.get("models", {}).items():
        evaluation = parts.get("evaluation", {})
        print(f"  {cohort}:")
        for role in ("baseline", "candidate"):
            model = parts.get(role, {})
            if model:
                print(f"    {role:9s} {model['registered_model']} v{model['model_version']}"
                      f"  AUROC {evaluation.get(f'{role}_auroc', float('nan'))} [{evaluation.get(f'{role}_auroc_ci', '')}]"
                      f"  Brier {evaluation.get(f'{role}_brier', float('nan'))}")
    for cohort, story_ in summary.get("cohorts", {}).items():
        print(f"  {cohort}:")
        from clinical_mlops.governance.policy import BLOCKING_SEVERITIES

        blocking = [g for g in story_["failing_groups"] if g["severity"] in BLOCKING_SEVERITIES]
        for group in blocking:
            print(f"    fairness FAIL {group['model']}: {group['rule']} {group['slice']}={group['group']} "
                  f"{group['estimate']:+.3f} {_ci(group['ci'])}")
        if len(blocking) < len(story_["failing_groups"]):
            print(f"    (and {len(story_['failing_groups']) - len(blocking)} failing group(s) of warn-level rules: "
                  "see the fairness report)")
        for group, conclusion in (summary.get("root_cause", {}).get(cohort) or {}).items():
            print(f"    root cause {group}: {conclusion}")
        for incident in story_["incidents_opened"]:
            print(f"    incident {incident['incident_id']} ({incident['severity']}) {incident['check']} → "
                  f"{incident['owner']}, due {incident['due_by']}")
        for extract, drift in story_["drift"].items():
            print(f"    drift {extract}: {'DATASET DRIFT' if drift['dataset_drift'] else 'no dataset drift'} "
                  f"({drift['features_drifted']}/{drift['features_tested']} features)")
        for ext in story_.get("external_evaluation", []):
            print(f"    external evaluation {ext['extract_id']} ({ext['relation'].replace('_', ' ')}): "
                  f"{ext['model_name']} v{ext['model_version']} AUROC {_num(ext['auroc'])} "
                  f"[{_num(ext['auroc_lower'])}, {_num(ext['auroc_upper'])}], n = {ext['n']:,} ({ext['n_positive']:,} events)")
        for decision in story_["promotion"]:
            print(f"    promotion {decision['model']}: {decision['status'].upper()}")
            for reason in decision["reasons"]:
                print(f"      - {reason}")
            if decision.get("next_command"):
                print(f"      next: {decision['next_command']}")
        for batch in story_["scoring"]:
            print(f"    scored {batch['extract_id']} with {batch['model_name']} v{batch['model_version']} "
                  f"({batch['model_source']}): {batch['rows']:,} rows, {batch['flagged'] or 0:,} flagged")
        print_windows(story_, summary.get("windows_played") or {})
    for refusal in dict.fromkeys(summary.get("refused", [])):
        print(f"  REFUSED: {refusal}")
    for failure in summary.get("failures", []):
        print(f"  FAILED: {failure}")
    print(f"  warehouse: {summary['warehouse']}\n  MLflow: {summary['mlflow_tracking_uri']}")
    print("  " + UI_HINT.replace("\n", "\n  "))
