"""The bench harness measures what it says: child wall time and peak memory, and a faithful report."""

from __future__ import annotations

import sys

import pytest

from clinical_mlops.bench import report, targets
from clinical_mlops.bench.measure import BenchStepError, measure


def test_measure_reports_the_childs_own_peak_memory(tmp_path):
    allocate = "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"
    big = measure("big", [sys.executable, "-c", allocate])
    small = measure("small", [sys.executable, "-c", "pass"])
    assert big.peak_rss_mib >= 300
    assert small.peak_rss_mib < big.peak_rss_mib - 250
    assert big.wall_seconds > 0


def test_measure_reads_the_childs_result_and_names_a_failure(tmp_path):
    result = tmp_path / "r.json"
    ok = measure("ok", [sys.executable, "-c", f"open({str(result)!r}, 'w').write('{{\"rows\": 7}}')"],
                 result_file=result, rows=7)
    assert ok.extra == {"rows": 7} and ok.rows_per_second == pytest.approx(7 / ok.wall_seconds)
    log = tmp_path / "fail.log"
    with pytest.raises(BenchStepError, match="exited with 3") as error:
        measure("fail", [sys.executable, "-c", "print('the reason'); raise SystemExit(3)"], log=log)
    assert "the reason" in str(error.value)


def _results() -> dict:
    machine = {"cpus": 2, "memory_gib": 24.0, "python": "3.11", "load_average_at_start": [1.0, 1.0, 1.0],
               "load_average_at_end": [2.0, 2.0, 2.0], "git_commit": "abc", "git_dirty": "false"}
    variants = {
        "bare_script": {"wall_seconds": 5.0, "peak_rss_mib": 300.0, "samples_wall_seconds": [5.0, 5.2],
                        "extra": {"test_auroc": 0.68, "seconds_by_phase": {"fit": 3.0}}},
        "orchestrated_graph": {"wall_seconds": 18.0, "peak_rss_mib": 800.0, "samples_wall_seconds": [18.0, 19.0],
                               "extra": {"candidate_auroc": 0.682}},
        "naive_script": {"wall_seconds": 4.0, "peak_rss_mib": 250.0, "samples_wall_seconds": [4.0],
                         "extra": {"test_auroc": 0.66}},
    }
    stages = [("generate", 2.0, 100.0), ("duckdb_scan", 10.0, 200.0), ("land", 100.0, 1000.0),
              ("validate", 60.0, 1500.0), ("features", 100.0, 3000.0), ("split", 20.0, 900.0),
              ("train", 200.0, 3900.0), ("drift_statistics", 50.0, 3000.0), ("fairness_aggregates", 10.0, 1000.0),
              ("evaluation", 10.0, 1000.0), ("batch_scoring", 100.0, 3500.0)]
    scale = [
        {"stage": stage, "encounters": 10_000_000, "wall_seconds": w, "peak_rss_mib": m, "rows_processed": 10_000_000,
         "rows_per_second": 10_000_000 / w} for stage, w, m in stages
    ]
    return {"started": "T", "machine": machine, "total_seconds": 40.0, "quick": False,
            "overhead": {"per_step": {"seconds_per_step": 0.05, "repeats": 3, "seconds_per_run_with_one_step": 0.4},
                         "load_definitions": {"assets": 90, "seconds": 1.2, "process_wall_seconds": 1.5,
                                              "peak_rss_mib": 200.0, "heavy_modules_loaded": []}},
            "startup": {"repeats": 2, "help": {"wall_seconds": 0.3, "peak_rss_mib": 50.0},
                        "land": {"wall_seconds": 3.0, "peak_rss_mib": 300.0}},
            "comparison": {"source": "synthetic", "source_note": "synthetic data", "rows": 1000, "extracts": ["a", "b"],
                           "bare_wall_seconds": 5.0, "bare": variants["bare_script"],
                           "graph": variants["orchestrated_graph"], "variants": variants,
                           "auroc": {"bare_script": 0.68, "graph_candidate": 0.682, "difference": 0.002},
                           "ratios": {"orchestrated_graph_vs_bare": 3.6, "naive_script_vs_bare": 0.8}},
            "demo": {"wall_seconds": 30.0, "peak_rss_mib": 900.0, "data": "real extract x.zip", "note": "real",
                     "slowest_steps": {"mitigated_model": 9.0}, "promotion": {"c": ["m v1: blocked"]}},
            "scale": scale,
            "serving": {"concurrency": {"1": {"ours_rps": 60.0, "mlflow_rps": 25.0},
                                        "8": {"ours_rps": 90.0, "mlflow_rps": 50.0}},
                        "durability": {"acknowledged": 500, "lost": 0}}}


def test_every_target_has_a_row_even_when_nothing_was_measured():
    rows = targets.targets({})
    assert [r["key"] for r in rows] == [t.key for t in targets.TARGETS]
    assert all(r["measured"] is None and r["met"] is None and r["note"] for r in rows)


def test_targets_are_ratios_to_the_yardstick_measured_in_the_same_run():
    rows = {r["key"]: r for r in targets.targets(_results())}
    assert rows["graph"]["ratio"] == 3.6 and rows["graph"]["met"] is False  # 18 s / 5 s > 3
    assert rows["demo"]["ratio"] == 6.0 and rows["demo"]["met"] is True
    assert rows["land"]["ratio"] == 0.6 and rows["land"]["met"] is False
    assert rows["definitions"]["ratio"] == 0.3 and rows["definitions"]["met"] is True
    assert rows["help"]["measured"] == 0.3 and rows["help"]["met"] is True and rows["help"]["ratio"] is None
    # 10M: the seven stages (not generate, the scan, train or evaluation) beside the plain scan
    assert rows["scale"]["measured"] == 440.0 and rows["scale"]["yardstick"] == 10.0
    assert rows["scale"]["peak_rss_mib"] == 3500.0 and rows["scale"]["met"] is True
    assert rows["serving_1"]["ratio"] == 2.4 and rows["serving_1"]["met"] is True
    assert rows["serving_8"]["ratio"] == 1.8 and rows["serving_8"]["met"] is False


def test_a_lost_acknowledged_prediction_or_a_small_scale_fails_or_is_not_judged():
    results = _results()
    results["serving"]["durability"]["lost"] = 1
    for row in results["scale"]:
        row["encounters"] = 20_000
    rows = {r["key"]: r for r in targets.targets(results)}
    assert rows["serving_1"]["met"] is False
    assert rows["scale"]["met"] is None and "not the 10M target size" in rows["scale"]["note"]


def test_report_tables_carry_every_measurement_and_the_targets(tmp_path):
    results = {**_results(), "targets": targets.targets(_results())}
    text = report.markdown(results)
    assert "| orchestrated_graph | 18.0 | [18.0, 19.0] | 800 | 0.6820 |" in text
    assert "orchestrated_graph **3.6×**" in text
    assert "| readmission graph, land → evaluation (Dagster runs) | 18.0 s, 800 MiB | like-for-like bare script: " \
           "5.00 s | 3.60× | ≤ 3× bare | **no** |" in text
    assert "| 10,000,000 | 440.0 | 3,500 | 650.0 | 10.0 |" in text  # 7 stages; + train, evaluation; the scan
    report.write(results, tmp_path)
    assert (tmp_path / "bench.png").stat().st_size > 10_000


def test_the_serving_measurement_is_read_into_the_targets(tmp_path, monkeypatch):
    import sys
    import types

    from clinical_mlops.bench import run

    def measure_serving(work, *, quick=False, say=None):
        level = {"ours": {"req_per_s": 50.0}, "mlflow": {"req_per_s": 20.0}, "ratio_req_per_s": 2.5}
        return {"levels": {"1": level, "8": {**level, "ours": {"req_per_s": 30.0}}},
                "durability": {"acknowledged": 120, "missing_from_log": 0, "chain_ok": True}}

    monkeypatch.setitem(sys.modules, "clinical_mlops.bench.serving", types.SimpleNamespace(measure_serving=measure_serving))
    serving = run.run_serving(run.BenchOptions(), tmp_path)
    assert serving["concurrency"] == {"1": {"ours_rps": 50.0, "mlflow_rps": 20.0},
                                      "8": {"ours_rps": 30.0, "mlflow_rps": 20.0}}
    rows = {r["key"]: r for r in targets.targets({"serving": serving})}
    assert rows["serving_1"]["ratio"] == 2.5 and rows["serving_1"]["met"] is True
    assert rows["serving_8"]["ratio"] == 1.5 and rows["serving_8"]["met"] is False
    assert "120 acknowledged, 0 lost" in rows["serving_1"]["note"]


def test_a_work_dir_not_yet_made_is_created(tmp_path):
    """``--work-dir`` naming a new folder: the bench makes it (it used to stop with a traceback)."""
    from clinical_mlops.bench import run

    options = run.BenchOptions(out_dir=tmp_path / "out", work_dir=tmp_path / "new" / "deeper", compare=False,
                               demo=False, startup=False, scale=False, overhead=False, serving=False)
    out = run.run_bench(options)
    assert (out / "bench.json").is_file() and (tmp_path / "new" / "deeper").is_dir()
