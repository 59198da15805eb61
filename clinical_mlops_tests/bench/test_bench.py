"""The bench harness measures what it says: child wall time and peak memory, and a faithful report."""

from __future__ import annotations

import sys

import pytest

from clinical_mlops.bench import report
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
        "bare_script": {"wall_seconds": 5.0, "peak_rss_mib": 300.0, "extra": {"test_auroc": 0.68}},
        "plain_pipeline": {"wall_seconds": 15.0, "peak_rss_mib": 700.0, "extra": {"candidate_auroc": 0.69}},
        "orchestrated_graph": {"wall_seconds": 18.0, "peak_rss_mib": 800.0, "extra": {"candidate_auroc": 0.69}},
    }
    scale = [
        {"stage": stage, "encounters": n, "wall_seconds": w, "peak_rss_mib": m, "rows_processed": n,
         "rows_per_second": n / w}
        for stage, n, w, m in [("land", 1000, 1.0, 100.0), ("land", 10_000, 4.0, 150.0),
                               ("validate", 1000, 2.0, 200.0), ("validate", 10_000, 9.0, 400.0)]
    ]
    return {"started": "T", "machine": machine, "total_seconds": 40.0,
            "comparison": {"source": "synthetic", "rows": 1000, "extracts": ["a", "b"], "variants": variants,
                           "ratios": {"orchestrated_vs_bare": 3.6, "plain_vs_bare": 3.0, "orchestrated_vs_plain": 1.2}},
            "scale": scale}


def test_report_tables_carry_every_measurement_and_the_per_size_totals(tmp_path):
    text = report.markdown(_results())
    assert "| orchestrated_graph | 18.0 | 800 | 0.690 |" in text
    assert "orchestrated / bare **3.6×**" in text
    assert "| validate | 10,000 | 9.0 | 400 | 10,000 | 1,111.1 |" in text
    assert "| 10,000 | 13.0 | 400 |" in text  # land 4 s + validate 9 s; the larger peak
    report.write(_results(), tmp_path)
    assert (tmp_path / "bench.png").stat().st_size > 10_000
