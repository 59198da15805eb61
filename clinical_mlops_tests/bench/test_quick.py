"""``clinical-mlops bench --quick`` writes the full run's JSON shape: every target row, each marked quick.

Behaviour only, on a tiny configuration: CI never times anything (the bench is where speed is measured).
The scale slice runs its data stages here, each in its own process as the bench runs them; the model
stages after ``split`` are the same functions ``test_stages.py`` runs in-process, so they are left out
(the scale row then says which stages are missing and is not judged).
"""

from __future__ import annotations

import json

from clinical_mlops.bench import run, scale, targets


def test_quick_bench_writes_every_target_row_marked_quick(tmp_path, monkeypatch):
    monkeypatch.setitem(run.QUICK, "compare_encounters", 1_500)
    monkeypatch.setitem(run.QUICK, "sizes", (1_500,))
    model_stages = ("train", "drift_statistics", "fairness_aggregates", "evaluation", "batch_scoring")
    monkeypatch.setattr(run, "QUICK_SKIPPED_STAGES", model_stages)
    options = run.quick_options(run.BenchOptions(out_dir=tmp_path / "out", startup=False, serving=False))
    out = run.run_bench(options)

    results = json.loads((out / "bench.json").read_text())
    assert results["quick"] is True and results["options"]["sizes"] == [1_500]
    rows = results["targets"]
    assert [r["key"] for r in rows] == [t.key for t in targets.TARGETS]
    assert all(r["quick"] for r in rows)
    for row in rows:
        assert set(row) >= {"what", "measured", "yardstick", "ratio", "target", "met", "note"}
    by_key = {r["key"]: r for r in rows}
    for measured in ("graph", "definitions", "scale"):
        assert by_key[measured]["measured"] is not None and by_key[measured]["yardstick"] is not None
    assert by_key["graph"]["yardstick_name"] == "like-for-like bare script"
    assert by_key["scale"]["met"] is None  # 1,500 encounters is not the 10M target: not judged
    assert "missing batch_scoring, drift_statistics, fairness_aggregates" in by_key["scale"]["note"]
    assert by_key["demo"]["measured"] is None and by_key["demo"]["note"] == run.QUICK_NO_DEMO
    comparison = results["comparison"]
    assert comparison["synthetic"] and "synthetic data (1,500 encounters): --quick" in comparison["source_note"]
    assert set(comparison["variants"]) == {"bare_script", "orchestrated_graph"}
    data_stages = {"generate", "duckdb_scan", "land", "validate", "features", "split"}
    assert [s["stage"] for s in results["scale"]] == [s.name for s in scale.STAGES if s.name in data_stages]
    assert all(s["rows_processed"] > 0 for s in results["scale"] if s["stage"] != "generate")
    assert "## Issue 16's targets" in (out / "bench.md").read_text()
    assert (tmp_path / "out" / "latest").resolve() == out.resolve()
