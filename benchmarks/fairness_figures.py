"""Figures for the fairness closing note: audit time, recall gaps and verdicts, gap before/after mitigation.

Runs the domain functions directly (no Dagster, no MLflow) on a temporary warehouse:

* the real UCI extract (``--uci``, default ../shared/data/diabetes130/dataset_diabetes.zip), and
* 30k synthetic encounters, unbiased, with label under-recording for one group
  (``SubgroupBias.label_flip_rate``), and with prior utilisation hidden for that group
  (record fragmentation, applied to the generated frame here: see the closing note).

    uv run python benchmarks/fairness_figures.py [--uci PATH] [--encounters 30000] [--out figures.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clinical_mlops.core.settings import PROJECT_ROOT, switch_off_telemetry

switch_off_telemetry()

from clinical_mlops.evaluation import metrics as evaluation
from clinical_mlops.fairness import audit as fairness, mitigation
from clinical_mlops.features import build as features
from clinical_mlops.ingestion import landing, synthetic, uci
from clinical_mlops.training import modelling
from clinical_mlops.validation import rules as validation
from clinical_mlops.core import warehouse  # noqa: E402
from clinical_mlops.features.cohort import load_cohort  # noqa: E402
from clinical_mlops.governance.policy import load_policy  # noqa: E402

SPEC = load_cohort("readmission_30d")
GROUP = "AfricanAmerican"


def fragment_records(frame: pd.DataFrame, rate: float, seed: int = 1, group: str = GROUP) -> pd.DataFrame:
    """Hide each prior-utilisation count of ``group`` (recorded as 0) with probability ``rate``."""
    out = frame.copy()
    rng = np.random.default_rng(seed)
    in_group = (out["race"] == group).to_numpy()
    for column in ("number_inpatient", "number_emergency", "number_outpatient"):
        out.loc[in_group & (rng.random(len(out)) < rate), column] = "0"
    return out


def build(frame: pd.DataFrame, root: Path):
    path = root / "extract.csv"
    frame.to_csv(path, index=False, lineterminator="\n")
    con = warehouse.connect(root / "warehouse.duckdb")
    landing.land_extract(con, path)
    validation.validate_extract(con, "extract.csv", pseudonym_key=b"benchmark-key")
    features.build_features(con, SPEC)
    features.assign_split(con, SPEC)
    return con


def run(name: str, frame: pd.DataFrame, policy, *, mitigate: bool, eg_max_iter: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        con = build(frame, Path(tmp))
        train = features.load_split_frame(con, SPEC, "train")
        test = features.load_split_frame(con, SPEC, "test")
        con.close()
    t0 = time.perf_counter()
    model = modelling.fit(modelling.build_gradient_boosting(SPEC, modelling.GradientBoostingParams()), train, SPEC)
    fit_s = time.perf_counter() - t0
    threshold = evaluation.operating_threshold(None, modelling.predict_risk(model, train, SPEC),
                                               strategy=SPEC.threshold_strategy, value=SPEC.threshold_value)
    scores = modelling.predict_risk(model, test, SPEC)
    audit_frame = test[list(policy.fairness.attribute_names)].assign(label=test["label"].to_numpy(), score=scores)
    t0 = time.perf_counter()
    result = fairness.audit(audit_frame, threshold=threshold, policy=policy)
    audit_s = time.perf_counter() - t0
    v = result.verdicts
    recall = v[(v["rule"] == "recall_gap") & (v["n"] >= policy.fairness.min_group_size)]
    out = {
        "name": name, "train_rows": len(train), "test_rows": len(test), "fit_seconds": round(fit_s, 1),
        "audit_seconds": round(audit_s, 2), "n_bootstrap": result.n_bootstrap, "verdicts": result.verdict_counts,
        "blocking_failed": result.blocking_failed,
        "failing": [f"{r.rule}: {r.slice}={r.group} {r.estimate:+.3f} [{r.lower:+.3f}, {r.upper:+.3f}]"
                    for r in result.failing.itertuples()],
        "recall_gaps": [
            {"slice": r.slice, "group": r.group, "n": int(r.n), "gap": round(r.estimate, 4),
             "ci": [round(r.lower, 4), round(r.upper, 4)], "p_adj": None if np.isnan(r.p_adjusted) else round(r.p_adjusted, 4),
             "verdict": r.verdict}
            for r in recall.itertuples()
        ],
    }
    if mitigate:
        t0 = time.perf_counter()
        comparison = mitigation.compare_mitigations(
            base_model=model, base_test_scores=scores, train=train, test=test, spec=SPEC, policy=policy,
            slice_name="race", group=GROUP, operating_threshold=threshold, eg_max_iter=eg_max_iter)
        out["mitigation_seconds"] = round(time.perf_counter() - t0, 1)
        out["mitigation"] = json.loads(comparison.table.round(4).to_json(orient="records"))
        out["chosen"] = comparison.chosen
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uci", type=Path, default=PROJECT_ROOT.parent / "shared/data/diabetes130/dataset_diabetes.zip")
    parser.add_argument("--encounters", type=int, default=30_000)
    parser.add_argument("--eg-max-iter", type=int, default=20)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    policy = load_policy()
    figures = []
    if not args.skip_real and args.uci.exists():
        figures.append(run("uci_real", uci.load_uci_encounters(args.uci), policy, mitigate=True,
                           eg_max_iter=args.eg_max_iter))
        print(json.dumps(figures[-1], indent=1), flush=True)
    base_config = synthetic.SyntheticConfig(n_encounters=args.encounters, seed=7)
    clean = synthetic.generate_encounters(base_config)
    cases = [
        ("synthetic_unbiased", clean, False),
        ("synthetic_label_flip_0.5", synthetic.generate_encounters(synthetic.SyntheticConfig(
            n_encounters=args.encounters, seed=7, bias=synthetic.SubgroupBias(label_flip_rate=0.5))), False),
        ("synthetic_fragmented_records_1.0", fragment_records(clean, 1.0), True),
    ]
    for name, frame, mitigate in cases:
        figures.append(run(name, frame, policy, mitigate=mitigate, eg_max_iter=args.eg_max_iter))
        print(json.dumps(figures[-1], indent=1), flush=True)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
