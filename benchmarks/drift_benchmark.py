"""Drift report time at 100k and 1M rows: our full-data statistics + sampled HTML vs Evidently on everything.

    .venv/bin/python benchmarks/drift_benchmark.py [--sizes 100000 1000000] [--out out/drift_benchmark.json]

What is timed, per size N (rows on *each* side, reference and current), in one process and one run:

* **ours** = the full-data statistics (stage both populations in DuckDB, KS / chi-square with
  Benjamini–Hochberg and PSI for every monitored column, one encounter per patient for the
  tests) **plus** the Evidently HTML on the policy's sample (20,000 rows per side, seed 17) —
  exactly what the ``drift_report`` asset does, minus the warehouse writes;
* **Evidently on the full data** = reading both populations into pandas and running
  ``Report([DataDriftPreset()])`` on all rows, saving the HTML.

Evidently is imported and warmed up on a tiny frame before any timing, so neither side pays the
import. The data: synthetic Diabetes 130 extracts (a reference extract and a current one with
``PopulationShift(strength=0.3)``) landed, validated and turned into ``readmission_30d``
features by the real pipeline at 100k rows; the 1M-row populations repeat those feature rows
ten times with fresh encounter ids and patient keys (same value distributions and cardinalities,
which is what the timings depend on). Wall times on a shared machine vary between runs: compare
the columns of one run, not runs with each other.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clinical_mlops.core.settings import switch_off_telemetry  # noqa: E402

switch_off_telemetry()

import psutil  # noqa: E402

from clinical_mlops.drift import statistics as drift, report as drift_report
from clinical_mlops.features import build as features
from clinical_mlops.ingestion import landing, synthetic
from clinical_mlops.validation import rules as validation
from clinical_mlops.core import warehouse  # noqa: E402
from clinical_mlops.features.cohort import load_cohort  # noqa: E402
from clinical_mlops.governance.policy import load_policy  # noqa: E402

BASE_ROWS = 100_000


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare(con, spec, workdir: Path) -> tuple[str, str]:
    """Two 100k-encounter extracts through land → validate → features; returns their ids."""
    ids = []
    for name, seed, strength, first_id in (("bench_reference.csv", 1, 0.0, 12_522),
                                           ("bench_current.csv", 2, 0.3, 900_000_000)):
        path = workdir / name
        synthetic.write_synthetic_csv(synthetic.SyntheticConfig(
            n_encounters=BASE_ROWS, seed=seed, shift=synthetic.PopulationShift(strength=strength),
            first_encounter_id=first_id), path)
        extract_id = landing.land_extract(con, path).extract_id
        validation.validate_extract(con, extract_id, pseudonym_key=b"benchmark-key")
        ids.append(extract_id)
    features.build_features(con, spec)
    return ids[0], ids[1]


def population_sql(spec, copies: int) -> str:
    """One extract's feature rows, repeated ``copies`` times with fresh encounter ids and patient keys."""
    if copies == 1:
        return f"SELECT * FROM {spec.features_table} WHERE extract_id = ?"
    return (f"SELECT * REPLACE (encounter_id * {copies} + r AS encounter_id, patient_key || '-' || r AS patient_key) "
            f"FROM {spec.features_table}, range({copies}) AS t(r) WHERE extract_id = ?")


def run_size(con, spec, settings, reference_id, current_id, rows: int, workdir: Path, evidently_full: bool) -> dict:
    copies = max(1, round(rows / BASE_ROWS))
    numeric = list(spec.numeric_features)
    categorical = list(dict.fromkeys([*spec.categorical_features, *spec.sensitive_attributes]))
    columns = [*numeric, *categorical, "label"]
    out: dict = {"target_rows_per_side": rows, "copies": copies}

    started = time.perf_counter()
    n_ref, n_cur = drift.stage_populations(
        con, population_sql(spec, copies), population_sql(spec, copies), columns,
        reference_params=[reference_id], current_params=[current_id], unit="patient_key", order_key="encounter_id")
    staged = time.perf_counter()
    result = drift.compare(con, numeric=numeric, categorical=categorical, settings=settings, label="label")
    statistics = time.perf_counter()
    sample = drift_report.sampled_frames(con, drift.STAGE_TABLE, columns, sample_rows=settings.sample_rows,
                                         seed=settings.sample_seed)
    html = drift_report.render_html(sample.reference, sample.current, numeric=numeric,
                                    categorical=[*categorical, "label"], path=workdir / f"ours_{rows}.html",
                                    drift_share=settings.dataset_drift_share)
    finished = time.perf_counter()
    out.update(
        reference_rows=n_ref, current_rows=n_cur, columns=len(columns),
        ours_stage_s=round(staged - started, 2),
        ours_statistics_s=round(statistics - staged, 2),
        ours_sample_html_s=round(finished - statistics, 2),
        ours_total_s=round(finished - started, 2),
        ours_features_drifted=len(result.drifted_features), ours_dataset_drift=result.dataset_drift,
        ours_html_mb=round(html.size_bytes / 2**20, 1), sample_rows=len(sample.reference),
    )
    _say(f"  ours: {out['ours_total_s']} s (stage {out['ours_stage_s']}, statistics {out['ours_statistics_s']}, "
         f"sampled HTML {out['ours_sample_html_s']}); {len(result.drifted_features)}/{result.features_tested} drifted")

    if evidently_full:
        rss_before = _rss_mb()
        started = time.perf_counter()
        reference = con.execute(f"SELECT {', '.join(columns)} FROM {drift.STAGE_TABLE} WHERE _side = 0").df()
        current = con.execute(f"SELECT {', '.join(columns)} FROM {drift.STAGE_TABLE} WHERE _side = 1").df()
        loaded = time.perf_counter()
        full = drift_report.render_html(reference, current, numeric=numeric, categorical=[*categorical, "label"],
                                        path=workdir / f"evidently_full_{rows}.html",
                                        drift_share=settings.dataset_drift_share)
        finished = time.perf_counter()
        out.update(
            evidently_load_s=round(loaded - started, 2),
            evidently_run_s=round(finished - loaded, 2),
            evidently_total_s=round(finished - started, 2),
            evidently_drifted_columns=full.drifted_columns,
            evidently_html_mb=round(full.size_bytes / 2**20, 1),
            evidently_rss_growth_mb=round(_rss_mb() - rss_before, 0),
            ratio_evidently_full_over_ours=round((finished - started) / out["ours_total_s"], 1),
        )
        del reference, current
        _say(f"  Evidently on the full data: {out['evidently_total_s']} s (load {out['evidently_load_s']}, "
             f"run+HTML {out['evidently_run_s']}); ratio {out['ratio_evidently_full_over_ours']}x")
    con.execute(f"DROP TABLE IF EXISTS {drift.STAGE_TABLE}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="rows per side")
    parser.add_argument("--no-evidently-full", action="store_true", help="time only our path")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    spec = load_cohort("readmission_30d")
    settings = drift.DriftSettings.from_policy(load_policy().drift)
    with tempfile.TemporaryDirectory(prefix="drift_bench_") as tmp:
        workdir = Path(tmp)
        con = warehouse.connect(workdir / "bench.duckdb")
        _say(f"Preparing two {BASE_ROWS:,}-encounter extracts through land → validate → features …")
        t = time.perf_counter()
        reference_id, current_id = prepare(con, spec, workdir)
        _say(f"  prepared in {time.perf_counter() - t:.0f} s")
        _say("Warming up Evidently (import and a tiny report, not timed) …")
        t = time.perf_counter()
        tiny = con.execute(f"SELECT * FROM {spec.features_table} LIMIT 200").df()
        drift_report.render_html(tiny, tiny, numeric=list(spec.numeric_features)[:2], categorical=["race"],
                                 path=workdir / "warmup.html")
        _say(f"  import + warm-up {time.perf_counter() - t:.1f} s")
        results = []
        for rows in args.sizes:
            _say(f"{rows:,} rows per side:")
            results.append(run_size(con, spec, settings, reference_id, current_id, rows, workdir,
                                    not args.no_evidently_full))
        con.close()
    summary = {"cpu_count": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
               "evidently_sample_rows": settings.sample_rows, "evidently_sample_seed": settings.sample_seed,
               "results": results}
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
