"""The demo's monitoring act: a shifted extract arrives, drift is detected, the retrained challenger is gated.

Launch helpers in the style of :mod:`clinical_mlops.runs` (they start Dagster runs on the
project instance, so everything shows in the UI afterwards), for ``clinical-mlops demo``:

1. :func:`run_gate` — change-control report and promotion gate for every cohort (after a
   training run). With no champion yet the policy's absolute criteria apply.
2. :func:`write_shifted_extract` — a synthetic extract with ``PopulationShift(strength)``,
   encounter ids after every earlier extract and patient numbers of its own.
3. :func:`run_features` then :func:`run_drift` — rebuild the features with the new extract,
   then compare it with the champion's training population.
4. a training run, then :func:`run_gate` again: the retrained challenger against the champion.

:func:`drift_summary` and :func:`gate_summary` pick the figures for the printed summary and
``--summary-json``: verdicts, drifted features, decisions and their reasons — aggregates only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import pandas as pd

from clinical_mlops import synthetic
from clinical_mlops.cohort import load_all_cohorts
from clinical_mlops.runs import QUIET_RUN_CONFIG, RunOutcome, _outcome

PATIENT_NUMBER_OFFSET = 1_000_000_000
"""Added to the shifted extract's patient numbers so its patients are new patients."""


def write_shifted_extract(landing_dir: Path, *, after: Sequence[Path], n_encounters: int, seed: int,
                          strength: float = 0.8) -> Path:
    """Write a shifted synthetic extract whose encounter ids follow every extract in ``after``.

    Deterministic: the same arguments give the same bytes, so a re-run lands nothing new.
    """
    last_id = max(int(pd.read_csv(p, usecols=["encounter_id"])["encounter_id"].max()) for p in after) if after else 0
    frame = synthetic.generate_encounters(synthetic.SyntheticConfig(
        n_encounters=n_encounters, seed=seed, shift=synthetic.PopulationShift(strength=strength),
        first_encounter_id=last_id + 1))
    frame["patient_nbr"] = (frame["patient_nbr"].astype("int64") + PATIENT_NUMBER_OFFSET).astype(str)
    path = Path(landing_dir) / f"shifted_s{seed}_n{n_encounters}_x{strength:g}.csv"
    if not path.exists():
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            frame.to_csv(tmp, index=False, lineterminator="\n", encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def _keys(asset: str) -> list[dg.AssetKey]:
    return [dg.AssetKey([spec.name, asset]) for spec in load_all_cohorts()]


def _execute(defs: dg.Definitions, instance: dg.DagsterInstance, keys: list[dg.AssetKey],
             partition_key: str | None = None) -> RunOutcome:
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, run_config=QUIET_RUN_CONFIG, asset_selection=keys,
                                    partition_key=partition_key, raise_on_error=False)
    return _outcome(result)


def run_features(defs: dg.Definitions, instance: dg.DagsterInstance) -> RunOutcome:
    """Rebuild every cohort's feature table (after a new extract is validated)."""
    return _execute(defs, instance, _keys("encounter_features"))


def run_drift(defs: dg.Definitions, instance: dg.DagsterInstance, extract_id: str) -> RunOutcome:
    """Drift of one extract (a partition) against each cohort's champion training population."""
    return _execute(defs, instance, _keys("drift_report"), partition_key=extract_id)


def run_gate(defs: dg.Definitions, instance: dg.DagsterInstance) -> RunOutcome:
    """Change-control report and promotion gate for every cohort.

    A blocked promotion fails its step (a blocking check with ERROR severity) after recording
    the decision: read :func:`gate_summary`, not ``success``, for the outcome.
    """
    return _execute(defs, instance, [*_keys("change_control_report"), *_keys("promotion")])


def drift_summary(outcome: RunOutcome) -> dict[str, dict]:
    """Per cohort: verdict, share, drifted features, prediction and target drift, report path."""
    picked = ("dataset_drift", "drift_share", "features_drifted", "features_tested", "drifted_features",
              "prediction_drift", "target_drift", "reference", "evidently_report", "statistics_seconds")
    out = {}
    for key, values in outcome.metadata.items():
        cohort, _, asset = key.partition("/")
        if asset == "drift_report":
            out[cohort] = {k: values[k] for k in picked if k in values}
    return out


def gate_summary(outcome: RunOutcome) -> dict[str, dict]:
    """Per cohort: challenger, champion before and after, promoted or not, and why."""
    out: dict[str, dict] = {}
    for key, values in outcome.metadata.items():
        cohort, _, asset = key.partition("/")
        if asset == "change_control_report":
            out.setdefault(cohort, {}).update(
                {k: values[k] for k in ("modification_kinds", "envelope", "auroc_delta", "auroc_delta_ci",
                                        "new_fairness_failures", "report_path") if k in values})
        elif asset == "promotion":
            out.setdefault(cohort, {}).update(
                {k: values[k] for k in ("challenger", "champion_before", "champion_after", "promoted", "mode",
                                        "decision") if k in values})
    if outcome.error and not outcome.metadata:
        out["error"] = {"message": outcome.error}
    return out
