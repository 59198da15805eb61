"""The audit bundle: complete, hashes verify (also offline with the bundled script), no patient rows."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import subprocess
import sys

import pytest

from clinical_mlops.audit import bundle as audit_bundle, ledger
from clinical_mlops.cli import audit as cli_audit
from clinical_mlops.core import warehouse
from clinical_mlops_tests.audit._audit_graph import COHORT

EXPECTED_FILES = {
    "index.md", "index.html", "manifest.json", "manifest.sha256", "verify_bundle.py", "trail.csv",
    "lineage/lineage.json", "lineage/extracts.csv", "environment/provenance.json", "environment/uv.lock",
    "environment/cohort_spec.yaml", "model/hyperparameters.json", "model/mlflow_run.json",
    "metrics/evaluation_metrics.csv", "reports/validation_summary.csv", "reports/quarantine_reasons.csv",
    "model_card/model_card.md", "model_card/model_card.html", "model_card/tripod_report.md",
    "model_card/tripod_report.html", "ledger/segment.jsonl", "ledger/head.json", "ledger/verification.json",
}


@pytest.fixture(scope="module")
def bundle(graph, tmp_path_factory):
    """A bundle exported while fairness, change-control and drift stages have left records and reports."""
    report = graph.reports / COHORT / "fairness_report.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("<html><body>Recall gap within policy</body></html>")
    out = tmp_path_factory.mktemp("bundles") / "bundle"
    with warehouse.connect(graph.workspace.warehouse) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("CREATE TABLE monitoring.fairness_verdicts (model_name VARCHAR, model_version VARCHAR, "
                        "attribute VARCHAR, metric VARCHAR, verdict VARCHAR)")
            con.execute("INSERT INTO monitoring.fairness_verdicts VALUES (?, ?, 'race', 'recall_gap', 'pass')",
                        [graph.candidate, graph.candidate_version])
            con.execute("CREATE TABLE audit.promotion_decisions (decided_at TIMESTAMP, model_name VARCHAR, "
                        "model_version VARCHAR, decision VARCHAR, patient_key VARCHAR)")
            con.execute("INSERT INTO audit.promotion_decisions VALUES (now(), ?, ?, 'blocked', 'abcdef0123456789')",
                        [graph.candidate, graph.candidate_version])
            result = audit_bundle.export(
                con, graph.candidate, graph.candidate_version, out, ledger_path=graph.ledger_path,
                tracking_uri=graph.workspace.tracking_uri, artifact_root=graph.workspace.artifacts,
                reports_dir=graph.reports, replay=True,
            )
        finally:
            con.execute("ROLLBACK")
    report.unlink()
    return result


def test_bundle_contents_are_complete(bundle):
    files = {p.relative_to(bundle.path).as_posix() for p in bundle.path.rglob("*") if p.is_file()}
    assert EXPECTED_FILES <= files
    assert {"reports/fairness/monitoring__fairness_verdicts.csv",
            "reports/change_control/audit__promotion_decisions.csv",
            f"reports/files/{COHORT}/fairness_report.html", "replay.json", "replay.md"} <= files
    assert bundle.ledger_ok and bundle.trail_entries > 0
    assert any("drift" in item for item in bundle.absent), "stages that have produced nothing are listed as absent"
    index = (bundle.path / "index.md").read_text()
    for heading in ("## Summary", "## Input extracts", "## Hyperparameters", "## Included", "## Not included"):
        assert heading in index
    assert "replay | IDENTICAL" in index


def test_bundle_hashes_verify(bundle):
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    assert hashlib.sha256((bundle.path / "manifest.json").read_bytes()).hexdigest() == bundle.manifest_sha256
    assert (bundle.path / "manifest.sha256").read_text().split()[0] == bundle.manifest_sha256
    for name, info in manifest["files"].items():
        data = (bundle.path / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"] and len(data) == info["bytes"], name
    assert set(manifest["files"]) == {p.relative_to(bundle.path).as_posix() for p in bundle.path.rglob("*")
                                      if p.is_file()} - {"manifest.json", "manifest.sha256"}
    ok, messages = audit_bundle.verify_bundle(bundle.path)
    assert ok, messages


def test_the_bundled_verifier_runs_offline_with_the_standard_library_only(bundle, tmp_path):
    result = subprocess.run([sys.executable, "-I", "verify_bundle.py"], cwd=bundle.path, capture_output=True,
                            text=True, timeout=60, env={"CLINICAL_MLOPS_LEDGER_KEY": ""})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BUNDLE OK" in result.stdout and "chain to the head" in result.stdout


@pytest.mark.parametrize("target", ["metrics/evaluation_metrics.csv", "ledger/segment.jsonl"])
def test_a_tampered_bundle_fails_verification(bundle, tmp_path, target):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle.path, copy)
    path = copy / target
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    ok, problems = audit_bundle.verify_bundle(copy)
    assert not ok and any(target in p or "segment" in p for p in problems)


def test_the_ledger_segment_and_trail_cover_this_model(bundle, graph):
    segment = [json.loads(line) for line in (bundle.path / "ledger" / "segment.jsonl").read_text().splitlines()]
    head = json.loads((bundle.path / "ledger" / "head.json").read_text())
    assert segment[-1]["seq"] == head["seq"] and segment[-1]["hash"] == head["hash"]
    assert [e["seq"] for e in segment] == list(range(segment[0]["seq"], head["seq"] + 1))
    with open(bundle.path / "trail.csv", encoding="utf-8") as fh:
        trail = list(csv.DictReader(fh))
    kinds = {(row["event_type"], row["subject"]) for row in trail}
    model = f"model:{graph.candidate}/{graph.candidate_version}"
    assert ("model_registered", model) in kinds and ("model_card_generated", model) in kinds
    assert (("asset_materialization", f"asset:{COHORT}/candidate_model") in kinds)
    assert ("asset_check_evaluation", f"check:{COHORT}/training_split:no_patient_overlap") in kinds
    assert {f"asset:synthetic_diabetes130/raw_extract[{e}]" for e in graph.extract_ids} <= {s for _, s in kinds}
    assert not any(s == f"model:{graph.baseline}/{graph.baseline_version}" for _, s in kinds), "other models' trail"
    verification = json.loads((bundle.path / "ledger" / "verification.json").read_text())
    assert verification["ledger"]["ok"] and verification["segment"]["ok"]
    exported = [e for e in ledger.read_entries(graph.ledger_path) if e.event_type == "audit_bundle_exported"]
    assert exported[-1].payload["manifest_sha256"] == bundle.manifest_sha256


def test_the_bundle_holds_no_patient_level_rows(bundle, graph):
    with warehouse.connect(graph.workspace.warehouse) as con:
        keys = [k for (k,) in con.execute(f"SELECT DISTINCT patient_key FROM features.{COHORT}").fetchall()]
    texts = {p: p.read_text(encoding="utf-8", errors="replace") for p in bundle.path.rglob("*")
             if p.is_file() and p.name != "uv.lock"}
    for path, text in texts.items():
        # code may name the column: the verifier (.py) and the cohort's SQL (environment/cohort_sql/)
        code = path.suffix == ".py" or path.parent == bundle.path / "environment" / "cohort_sql"
        assert "patient_key" not in text or code, path
        assert not any(k in text for k in keys), f"{path} holds a patient key"
    for path in bundle.path.rglob("*.csv"):
        with open(path, encoding="utf-8") as fh:
            header = next(csv.reader(fh))
        assert "encounter_id" not in header and "patient_key" not in header, path
    lineage = json.loads((bundle.path / "lineage" / "lineage.json").read_text())
    with warehouse.connect(graph.workspace.warehouse) as con:
        landed = dict(con.execute("SELECT extract_id, sha256 FROM raw.extracts").fetchall())
    assert {e["extract_id"]: e["sha256"] for e in lineage["extracts"]} == landed


def test_export_command_refuses_a_non_empty_folder(graph, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLINICAL_MLOPS_DATA_DIR", str(graph.workspace.root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    parser = argparse.ArgumentParser()
    cli_audit.register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "cli_bundle"
    args = parser.parse_args(["audit", "export", "--model", graph.baseline, "--version", graph.baseline_version,
                              "--out", str(out)])
    assert args.func(args) == 0
    assert "audit bundle written" in capsys.readouterr().out
    assert audit_bundle.verify_bundle(out)[0]
    assert args.func(args) == 2 and "not empty" in capsys.readouterr().err
