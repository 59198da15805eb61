"""``clinical-mlops demo``: the whole governed graph on synthetic data or the UCI release.

The demo launches jobs; the order inside each is the asset graph's (fairness before change control
before promotion before scoring), exactly what "materialize" in the Dagster UI does:

1. the training extracts land and are validated, one ``ingestion_job`` run each;
2. ``training_job``: features, split, baseline and candidate, evaluation;
3. ``drift_job`` on the newest training extract (change control reads the newest drift report);
4. ``release_job``: fairness audit, root cause, mitigation, model card, change control, promotion;
5. the later extract arrives (synthetic: a shifted population): lands, its features, its drift report;
6. ``scoring_job`` scores it with each cohort's champion only — a cohort with no champion is refused.

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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clinical_mlops.core.settings import default_paths

__all__ = ["DemoExtracts", "cmd_demo", "prepare_extracts", "story"]

UI_HINT = (
    "Dagster UI: make ui  → http://127.0.0.1:3000 (assets, lineage, checks)\n"
    "MLflow UI: started by make ui → http://127.0.0.1:5000 (runs, registered models)"
)
NO_CHAMPION = "no champion for"
"""How scoring's refusal starts when a cohort has no champion: an outcome of the gate, not a failure."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class DemoExtracts:
    """The extracts the demo lands: the first ones train the models, the later ones arrive after release."""

    training: list[Path]
    later: list[Path]


def prepare_extracts(
    source: Path | None, seed: int, n_encounters: int, n_extracts: int, landing_dir: Path, bias: float, shift: float
) -> DemoExtracts:
    """Synthetic: ``n_encounters`` cut into ``n_extracts - 1`` training extracts, then one more extract of the
    same size from a population shifted by ``shift``. The UCI release: ``n_extracts`` ordered extracts, the
    last arriving after release (no shift is injected into real data)."""
    from clinical_mlops.ingestion import uci

    landing_dir.mkdir(parents=True, exist_ok=True)
    if source is not None:
        _say(f"Reading the UCI extract from {source} …")
        paths = uci.write_sequential_extracts(uci.load_uci_encounters(source), landing_dir, n_extracts,
                                              prefix=f"uci_of{n_extracts}")
        return DemoExtracts(paths[:-1], paths[-1:]) if len(paths) > 1 else DemoExtracts(paths, [])

    from clinical_mlops.ingestion import synthetic

    injected = synthetic.SubgroupBias("race", "AfricanAmerican", utilisation_undercount_rate=bias,
                                      history_unlinked_rate=bias) if bias else None
    _say(f"Generating {n_encounters:,} synthetic encounters (seed {seed}"
         + (f"; prior visits of AfricanAmerican patients under-recorded at rate {bias:g}" if bias else "") + ") …")
    encounters = synthetic.generate_encounters(
        synthetic.SyntheticConfig(n_encounters=n_encounters, seed=seed, bias=injected)
    )
    stem = f"synthetic_s{seed}_n{n_encounters}_of{n_extracts}" + (f"_bias{bias:g}" if bias else "")
    n_training = max(1, n_extracts - 1)
    training = uci.write_sequential_extracts(encounters, landing_dir, n_training, prefix=stem)
    if n_extracts < 2:
        return DemoExtracts(training, [])
    _say(f"Generating a later extract of {n_encounters // n_training:,} encounters from a population shifted by "
         f"{shift:g} (the generator's covariate-shift knob) …")
    later = synthetic.generate_encounters(
        synthetic.SyntheticConfig(n_encounters=n_encounters // n_training, seed=seed + 1,
                                  shift=synthetic.PopulationShift(shift), bias=injected,
                                  first_encounter_id=int(encounters["encounter_id"].astype("int64").max()) + 1),
        patient_offset=int(encounters["patient_nbr"].astype("int64").max()),
    )
    return DemoExtracts(training, uci.write_sequential_extracts(later, landing_dir, 1, prefix=f"{stem}_shift{shift:g}"))


class _Launcher:
    """Runs jobs on the project instance, records each in the ledger, collects what went wrong."""

    def __init__(self) -> None:
        from clinical_mlops.cli import runs

        self.runs = runs
        self.instance = runs.project_instance()
        self.defs = runs.load_definitions()
        self.failures: list[str] = []
        self.refusals: list[str] = []

    def job(self, name: str, *, partition_key: str | None = None, expect_refusal: str | None = None):
        from clinical_mlops.cli import errors as cli_errors
        from clinical_mlops.defs.audit.sensors import record_run

        outcome = self.runs.run_job(self.defs, self.instance, name, partition_key=partition_key)
        record_run(self.instance, outcome.run_id)
        for raw in outcome.step_errors or ([outcome.error] if outcome.error else []):
            error = cli_errors.without_dagster_names(raw) or "the step failed"
            if expect_refusal and error.startswith(expect_refusal):
                self.refusals.append(error)
            else:
                self.failures.append(f"{name}{f' ({partition_key})' if partition_key else ''}: {error}")
        return outcome

    def land(self, path: Path):
        self.runs.register_extracts(self.instance, [path.name])
        return self.job("ingestion_job", partition_key=path.name)


def _extract_row(path: Path, outcome) -> dict:
    raw = outcome.metadata.get("raw_encounters", {})
    valid = outcome.metadata.get("validated_encounters", {})
    return {"extract_id": path.name, "status": raw.get("status"), "rows_landed": raw.get("rows_landed"),
            "rows_valid": valid.get("rows_valid"), "rows_quarantined": valid.get("rows_quarantined"),
            "run_id": outcome.run_id, "failed_checks": outcome.failed_checks}


def cmd_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    began = datetime.now(UTC).replace(tzinfo=None)
    paths = default_paths()
    source = args.source.resolve() if args.source else None
    extracts = prepare_extracts(source, args.seed, args.encounters, args.extracts, paths.landing_dir, args.bias,
                                args.shift)
    launch = _Launcher()
    summary: dict = {"source": str(source) if source else "synthetic", "seed": args.seed, "bias": args.bias,
                     "extracts": []}
    stages = len(extracts.training) + 3 + (1 if extracts.later else 0)
    step = 0
    for path in extracts.training:
        step += 1
        _say(f"[{step}/{stages}] Landing and validating {path.name}")
        summary["extracts"].append(_extract_row(path, launch.land(path)))

    step += 1
    _say(f"[{step}/{stages}] Features, split, models and evaluation for every cohort")
    training = launch.job("training_job")
    summary["training_run_id"] = training.run_id
    summary["models"] = _model_summary(training.metadata)
    if not training.success:
        return _finish(summary, launch, started, began, paths, args)

    step += 1
    newest = extracts.training[-1].name
    _say(f"[{step}/{stages}] Drift of {newest}; then fairness, root cause, mitigation, model card, "
         "change control and the promotion gate (the graph's order)")
    launch.job("drift_job", partition_key=newest)
    release = launch.job("release_job")
    summary["release_run_id"] = release.run_id
    summary["root_cause"] = {key.partition("/")[0]: values.get("conclusions", {})
                             for key, values in release.metadata.items() if key.endswith("/fairness_root_cause")}

    scored = newest
    if extracts.later:
        step += 1
        later = extracts.later[-1]
        _say(f"[{step}/{stages}] A later extract arrives: {later.name} — landing, features, drift")
        summary["extracts"].append(_extract_row(later, launch.land(later)))
        launch.job("features_job")
        launch.job("drift_job", partition_key=later.name)
        scored = later.name

    step += 1
    _say(f"[{step}/{stages}] Batch scoring of {scored} with each cohort's champion")
    launch.job("scoring_job", partition_key=scored, expect_refusal=NO_CHAMPION)
    return _finish(summary, launch, started, began, paths, args)


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


def story(con, since: datetime) -> dict[str, dict]:
    """Per cohort: promotion status and reasons, failing groups, incidents opened since ``since``, drift
    verdict per extract, the batch scoring outcome, and the command that approves a waiting model."""
    from clinical_mlops.features.cohort import load_all_cohorts
    from clinical_mlops.fairness import audit as fairness

    out: dict[str, dict] = {}
    for spec in load_all_cohorts():
        cohort = spec.name
        fair = fairness.summary_for(con, cohort)
        out[cohort] = {
            "promotion": _decisions(con, cohort, since),
            "failing_groups": [
                {"model": (fair.get(role) or {}).get("model"), **failing}
                for role in ("candidate", "mitigated") for failing in (fair.get(role) or {}).get("failing", [])
            ],
            "fairness": fair,
            "incidents_opened": _rows(con, """SELECT incident_id, severity, owner, due_by, model, "check", status
                                              FROM monitoring.incidents WHERE cohort = ? AND opened_at >= ?
                                              ORDER BY opened_at""", [cohort, since]),
            "drift": {r["extract_id"]: r for r in _rows(con, """
                SELECT extract_id, dataset_drift, drift_share, features_drifted, features_tested, prediction_drift,
                       reference_kind, reference_model, reference_version
                FROM monitoring.drift_runs WHERE cohort = ? AND computed_at >= ? ORDER BY computed_at""",
                [cohort, since])},
            "scoring": _rows(con, """SELECT extract_id, model_name, model_version, model_source, count(*) AS rows,
                                            sum(CAST(flagged AS INTEGER)) AS flagged
                                     FROM ml.batch_predictions WHERE cohort = ? AND predicted_at >= ?
                                     GROUP BY ALL ORDER BY extract_id""", [cohort, since]),
        }
    return out


def _rows(con, sql: str, params: list) -> list[dict]:
    import duckdb

    try:
        cursor = con.execute(sql, params)
    except duckdb.CatalogException:  # the table is created by a step that did not run
        return []
    columns = [d[0] for d in cursor.description]
    return [json.loads(json.dumps(dict(zip(columns, row)), default=str)) for row in cursor.fetchall()]


def _decisions(con, cohort: str, since: datetime) -> list[dict]:
    """The promotion decisions of this demo, newest per model; status promoted | blocked | pending_approval."""
    rows = _rows(con, "SELECT * FROM audit.promotion_decisions WHERE cohort = ? AND decided_at >= ? "
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


def _finish(summary: dict, launch: _Launcher, started: float, began: datetime, paths, args) -> int:
    from clinical_mlops.core import warehouse

    with contextlib.closing(warehouse.connect(paths.warehouse)) as con:
        summary["cohorts"] = story(con, began)
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


def _ci(values: list) -> str:
    return "[" + ", ".join("—" if v is None else f"{v:+.3f}" for v in values) + "]"


def _print_summary(summary: dict) -> None:
    landed = sum(e["rows_landed"] or 0 for e in summary["extracts"])
    quarantined = sum(e["rows_quarantined"] or 0 for e in summary["extracts"])
    print(f"\nclinical_mlops demo — {summary['source']} — {summary['wall_seconds']} s")
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
        for decision in story_["promotion"]:
            print(f"    promotion {decision['model']}: {decision['status'].upper()}")
            for reason in decision["reasons"]:
                print(f"      - {reason}")
            if decision.get("next_command"):
                print(f"      next: {decision['next_command']}")
        for batch in story_["scoring"]:
            print(f"    scored {batch['extract_id']} with {batch['model_name']} v{batch['model_version']} "
                  f"({batch['model_source']}): {batch['rows']:,} rows, {batch['flagged'] or 0:,} flagged")
    for refusal in summary.get("refused", []):
        print(f"  REFUSED: {refusal}")
    for failure in summary.get("failures", []):
        print(f"  FAILED: {failure}")
    print(f"  warehouse: {summary['warehouse']}\n  MLflow: {summary['mlflow_tracking_uri']}")
    print("  " + UI_HINT.replace("\n", "\n  "))
