"""Wall time, peak RSS and rows/s of the ML stages at scale, each stage in its own process.

Builds a DuckDB warehouse of N feature rows from 30k synthetic encounters (landed, validated,
featurised and split with the project's own functions, one gradient-boosting model fitted on
them), replicated in SQL with new ids and jittered counts, in 10 extracts; ~20% of patients in
the test split with scores (the model's score of the source encounter plus noise); staging
holds one more extract of N/10 encounters for batch scoring. Then runs each stage of
``clinical_mlops.scale_ml_stages`` in a fresh subprocess and reads its peak RSS from
``os.wait4``. One JSON line per stage:

    uv run --frozen python -m benchmarks.scale_ml_stages --rows 1000000 10000000 [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("drift_statistics", "fairness_aggregates", "evaluation", "batch_scoring")
BASE_ENCOUNTERS = 30_000
N_EXTRACTS = 10
NEW_EXTRACT = "bench_new.csv"
MODEL_NAME = "readmission_30d_candidate"


def _spec():
    from clinical_mlops.cohort import load_cohort

    return load_cohort("readmission_30d")


def build_base(root: Path) -> Path:
    """30k synthetic encounters through landing, validation, features and split; a fitted model."""
    from threadpoolctl import threadpool_limits

    from clinical_mlops import features, landing, modelling, synthetic, validation, warehouse

    base = root / "base"
    if (base / "done").exists():
        return base
    base.mkdir(parents=True, exist_ok=True)
    spec = _spec()
    frame = synthetic.generate_encounters(synthetic.SyntheticConfig(n_encounters=BASE_ENCOUNTERS, seed=3))
    path = base / "extract.csv"
    frame.to_csv(path, index=False, lineterminator="\n")
    con = warehouse.connect(base / "warehouse.duckdb")
    landing.land_extract(con, path)
    validation.validate_extract(con, path.name, pseudonym_key=b"benchmark-key")
    features.build_features(con, spec)
    features.assign_split(con, spec)
    train = features.load_split_frame(con, spec, "train")
    with threadpool_limits(limits=1):
        model = modelling.fit(modelling.build_gradient_boosting(spec, modelling.GradientBoostingParams(max_iter=50)),
                              train, spec)
        everything = con.execute(f"SELECT * FROM {spec.features_table}").df()
        everything["score"] = modelling.predict_risk(model, everything, spec)
    con.register("scored", everything[["encounter_id", "score"]])
    con.execute("CREATE OR REPLACE TABLE main.base_scores AS SELECT * FROM scored")
    con.close()
    (base / "model.pkl").write_bytes(pickle.dumps(model))
    (base / "done").write_text("ok")
    return base


def build_scaled(root: Path, base: Path, rows: int) -> Path:
    """The base warehouse with ``rows`` feature rows, splits, test scores and a new extract in staging."""
    from clinical_mlops import scale_ml_stages, warehouse

    out = root / f"n{rows}"
    if (out / "done").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(base / "warehouse.duckdb", out / "warehouse.duckdb")
    spec = _spec()
    con = warehouse.connect(out / "warehouse.duckdb")
    scale_ml_stages.limit_memory(con, memory_limit="4GB")
    n_base = int(con.execute(f"SELECT count(*) FROM {spec.features_table}").fetchone()[0])
    copies = math.ceil(rows / n_base)
    jitter = {"num_lab_procedures": 5, "num_medications": 3, "time_in_hospital": 1}
    replace = ", ".join(
        [f"greatest(0, f.{c} + CAST(hash(f.encounter_id, r.i, '{c}') % {2 * w + 1} AS INTEGER) - {w}) AS {c}"
         for c, w in jitter.items()]
        + ["f.encounter_id * 1000 + r.i AS encounter_id", "f.patient_key || ':' || r.i AS patient_key",
           f"'bench_' || lpad(CAST(hash(f.encounter_id, r.i) % {N_EXTRACTS} AS VARCHAR), 2, '0') AS extract_id"])
    con.execute(f"""CREATE OR REPLACE TABLE main.big AS
        SELECT f.* REPLACE ({replace}), f.encounter_id AS source_id
        FROM {spec.features_table} f, range({copies}) r(i) LIMIT {rows}""")
    con.execute(f"CREATE OR REPLACE TABLE {spec.features_table} AS SELECT * EXCLUDE (source_id) FROM main.big")
    con.execute("DELETE FROM ml.splits WHERE cohort = ?", [spec.name])
    con.execute(f"""INSERT INTO ml.splits SELECT '{spec.name}', encounter_id, patient_key,
        CASE WHEN hash(patient_key) % 5 = 0 THEN 'test' ELSE 'train' END FROM main.big""")
    con.execute(f"""INSERT INTO ml.predictions
        SELECT '{spec.name}', '{MODEL_NAME}', '1', 'bench', 'test', b.encounter_id, b.label,
               least(1 - 1e-6, greatest(1e-6, s.score + (CAST(hash(b.encounter_id) % 2001 AS DOUBLE) - 1000) / 50000)),
               TIMESTAMP '2026-01-01'
        FROM main.big b JOIN main.base_scores s ON s.encounter_id = b.source_id
        JOIN ml.splits sp ON sp.cohort = '{spec.name}' AND sp.encounter_id = b.encounter_id AND sp.split = 'test'""")
    threshold = float(con.execute(f"""SELECT quantile_cont(score, 0.8) FROM ml.predictions
                                     WHERE model_name = '{MODEL_NAME}'""").fetchone()[0])
    trained_on = json.dumps([{"extract_id": f"bench_{i:02d}", "sha256": "bench"} for i in range(N_EXTRACTS - 1)])
    con.execute("""INSERT INTO ml.model_versions VALUES (TIMESTAMP '2026-01-01', ?, 'candidate', ?, '1', 'bench',
        'hist_gradient_boosting', '{}', ?, 0, 0, ?, '', '', '', '', false, '')""",
                [spec.name, MODEL_NAME, threshold, trained_on])
    con.execute("DROP TABLE main.big")
    # one more extract of rows / N_EXTRACTS encounters in staging, for batch scoring
    n_staged = int(con.execute("SELECT count(*) FROM staging.encounters").fetchone()[0])
    new_rows = rows // N_EXTRACTS
    con.execute(f"""INSERT INTO staging.encounters
        SELECT e.* REPLACE (e.encounter_id * 1000 + 999 - r.i AS encounter_id, '{NEW_EXTRACT}' AS extract_id,
                            e.patient_key || ':new' || r.i AS patient_key)
        FROM staging.encounters e, range({math.ceil(new_rows / n_staged)}) r(i) LIMIT {new_rows}""")
    con.execute("CHECKPOINT")
    con.close()
    (out / "threshold").write_text(repr(threshold))
    (out / "done").write_text("ok")
    return out


def run_stage(stage: str, warehouse_path: Path, model_path: Path, threshold: float, html_path: Path) -> dict:
    """One stage in this process (the child side)."""
    from clinical_mlops import modelling, scale_ml_stages, scoring, warehouse
    from clinical_mlops.policy import load_policy

    spec = _spec()
    policy = load_policy()
    con = warehouse.connect(warehouse_path)
    scale_ml_stages.limit_memory(con)
    pipeline = pickle.loads(model_path.read_bytes())
    if stage == "drift_statistics":
        current = f"bench_{N_EXTRACTS - 1:02d}"
        return scale_ml_stages.drift_statistics(con, spec, current, policy=policy, html_path=html_path,
                                                predict=lambda frame: modelling.predict_risk(pipeline, frame, spec))
    if stage == "fairness_aggregates":
        return scale_ml_stages.fairness_aggregates(con, spec, policy=policy)
    if stage == "evaluation":
        return scale_ml_stages.evaluation(con, spec)
    if stage == "batch_scoring":
        ref = scoring.ModelRef(name=MODEL_NAME, version="1", run_id="bench", source="benchmark",
                               model_card_sha256=None, operating_threshold=threshold)
        return scale_ml_stages.batch_scoring(con, scoring.ScoringModel(ref=ref, pipeline=pipeline, spec=spec),
                                             NEW_EXTRACT)
    raise ValueError(f"unknown stage {stage!r}")


def measure(stage: str, scaled: Path, base: Path, rows: int) -> dict:
    """Run one stage in a fresh interpreter; wall time and peak RSS from wait4."""
    cmd = [sys.executable, "-m", "benchmarks.scale_ml_stages", "--child", stage, "--warehouse",
           str(scaled / "warehouse.duckdb"), "--model", str(base / "model.pkl"),
           "--threshold", (scaled / "threshold").read_text(), "--html", str(scaled / "drift.html")]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = json.loads(output.strip().splitlines()[-1]) if proc.returncode == 0 and output.strip() else {}
    stage_rows = int(result.get("rows", 0))
    return {"stage": stage, "feature_rows": rows, "stage_rows": stage_rows, "ok": proc.returncode == 0,
            "wall_seconds": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "rows_per_second": round(stage_rows / wall) if wall and stage_rows else None, "result": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--workdir", type=Path, default=None, help="kept (and reused) when given")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--build", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warehouse", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threshold", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--html", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child or args.build:
        from clinical_mlops.settings import switch_off_telemetry

        switch_off_telemetry()
    if args.build:  # the parent stays small: a forked child's peak RSS starts at its parent's
        base = build_base(args.workdir)
        scaled = build_scaled(args.workdir, base, args.build)
        print(json.dumps({"base": str(base), "scaled": str(scaled)}))
        return
    if args.child:
        print(json.dumps(run_stage(args.child, args.warehouse, args.model, args.threshold, args.html), default=str))
        return
    root = args.workdir or Path(tempfile.mkdtemp(prefix="scale_ml_"))
    try:
        for rows in args.rows:
            t0 = time.perf_counter()
            built = subprocess.run([sys.executable, "-m", "benchmarks.scale_ml_stages", "--build", str(rows),
                                    "--workdir", str(root)], check=True, stdout=subprocess.PIPE, text=True)
            paths = json.loads(built.stdout.strip().splitlines()[-1])
            base, scaled = Path(paths["base"]), Path(paths["scaled"])
            print(json.dumps({"build": rows, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
            for stage in args.stages:
                print(json.dumps(measure(stage, scaled, base, rows), default=str), flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
