"""Model cards and TRIPOD+AI reports: generated per version, hashed into the ledger and MLflow."""

from __future__ import annotations

import hashlib
import re

from mlflow.tracking import MlflowClient

from clinical_mlops.audit import ledger, model_card
from clinical_mlops.core import tracking
from clinical_mlops_tests.audit._audit_graph import COHORT


def _card_dir(graph, name: str, version: str):
    return graph.reports / COHORT / "model_cards" / f"{name}_v{version}"


def test_the_asset_wrote_cards_and_recorded_their_hashes_in_mlflow_and_the_ledger(graph):
    tracking.configure(graph.workspace.tracking_uri, graph.workspace.artifacts)
    client = MlflowClient()
    recorded = {e.payload["model_card_sha256"]: e for e in ledger.read_entries(graph.ledger_path)
                if e.event_type == "model_card_generated"}
    for name, version in ((graph.candidate, graph.candidate_version), (graph.baseline, graph.baseline_version)):
        folder = _card_dir(graph, name, version)
        markdown = (folder / "model_card.md").read_bytes()
        sha = hashlib.sha256(markdown).hexdigest()
        model_version = client.get_model_version(name, version)
        assert model_version.tags[model_card.TAG_CARD] == sha
        assert model_version.tags[model_card.TAG_TRIPOD] == hashlib.sha256(
            (folder / "tripod_report.md").read_bytes()).hexdigest()
        entry = recorded[sha]
        assert entry.subject == f"model:{name}/{version}" and entry.payload["model_name"] == name
        artifacts = {a.path for a in client.list_artifacts(model_version.run_id, "model_card")}
        assert artifacts == {f"model_card/{f}" for f in ("model_card.md", "model_card.html",
                                                          "tripod_report.md", "tripod_report.html")}
    assert ledger.verify(graph.ledger_path).ok


def test_a_card_has_the_nine_sections_in_order(con, graph):
    card = model_card.build_model_card(con, graph.candidate, graph.candidate_version)
    headings = re.findall(r"^## \d+\. (.+)$", card.markdown, flags=re.MULTILINE)
    assert headings == list(model_card.MITCHELL_SECTIONS)
    assert "<h2>7. Quantitative Analyses</h2>" in card.html and "<table>" in card.html
    assert f"`{graph.candidate}` version {graph.candidate_version}" in card.markdown


def test_quantitative_analyses_are_per_subgroup_with_confidence_intervals(con, graph):
    card = model_card.build_model_card(con, graph.candidate, graph.candidate_version)
    section = card.markdown.split("## 7. Quantitative Analyses")[1].split("## 8.")[0]
    for attribute in ("race", "gender", "age_band"):
        assert f"### By {attribute}" in section
    ci = re.compile(r"\d\.\d{3} \(\d\.\d{3}–\d\.\d{3}\)")
    gender = section.split("### By gender")[1].split("###")[0]
    assert len(ci.findall(gender)) >= 2 * 6, "both gender groups have every headline metric with a CI"
    assert card.subgroups_with_ci >= 2
    auroc = con.execute(
        """SELECT estimate, lower, upper FROM ml.evaluation_metrics WHERE model_name = ? AND model_version = ?
           AND attribute = 'overall' AND metric = 'auroc' ORDER BY evaluated_at DESC LIMIT 1""",
        [graph.candidate, graph.candidate_version],
    ).fetchall()[0]
    assert f"| AUROC | {auroc[0]:.3f} ({auroc[1]:.3f}–{auroc[2]:.3f}) |" in section


def test_small_cells_are_suppressed_and_no_identifier_appears(con, graph):
    card = model_card.build_model_card(con, graph.candidate, graph.candidate_version)
    small = con.execute(f"SELECT count(*) FROM features.{COHORT} GROUP BY race HAVING count(*) < 11").fetchall()
    if small:
        assert "<11" in card.markdown
    keys = [k for (k,) in con.execute(f"SELECT DISTINCT patient_key FROM features.{COHORT} LIMIT 200").fetchall()]
    for text in (card.markdown, card.tripod_markdown):
        assert not any(k in text for k in keys)
        assert "patient_key" not in text


def test_tripod_items_are_each_reported_from_facts_or_not_reported(con, graph):
    card = model_card.build_model_card(con, graph.baseline, graph.baseline_version)
    items = {i.item: i for i in card.tripod_items}
    assert len(items) == len(card.tripod_items) >= 40, "every checklist item appears once"
    for item in card.tripod_items:
        assert item.text.strip(), f"item {item.item} is empty"
    for required in ("5a", "6b", "8a", "9a", "10", "11", "12c", "13", "15", "16", "20b", "23a"):
        assert items[required].reported, required
    assert not items["14"].reported, "no fairness audit was recorded in this graph"
    assert not items["12d"].reported and "centre" in items["12d"].text
    assert "logistic regression" in items["1"].text
    assert f"{graph.extract_ids[0]}" in items["5a"].text
    table_rows = [line for line in card.tripod_markdown.splitlines() if re.match(r"^\| \d+[a-g]? \|", line)]
    assert len(table_rows) == len(items)
    assert all(("| reported |" in row) or ("| not reported |" in row) for row in table_rows)
    assert "All are available at discharge" not in card.tripod_markdown


def test_the_card_is_deterministic_so_its_hash_identifies_its_content(con, graph):
    first = model_card.build_model_card(con, graph.candidate, graph.candidate_version)
    second = model_card.build_model_card(con, graph.candidate, "latest")
    assert first.sha256 == second.sha256 and first.tripod_sha256 == second.tripod_sha256


def test_fairness_verdicts_appear_when_the_fairness_stage_has_written_them(con, graph):
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("CREATE TABLE IF NOT EXISTS monitoring.fairness_verdicts (model_name VARCHAR, model_version VARCHAR, "
                    "attribute VARCHAR, metric VARCHAR, verdict VARCHAR, patient_key VARCHAR)")
        con.execute("INSERT INTO monitoring.fairness_verdicts VALUES (?, ?, 'race', 'recall_gap', 'pass', 'secret')",
                    [graph.candidate, graph.candidate_version])
        card = model_card.build_model_card(con, graph.candidate, graph.candidate_version)
    finally:
        con.execute("ROLLBACK")
    section = card.markdown.split("### Fairness verdicts")[1]
    assert "| race | recall_gap | pass |" in section and "secret" not in card.markdown


def test_recording_an_unchanged_card_again_adds_no_entry(con, graph, tmp_path):
    card = model_card.build_model_card(con, graph.candidate, graph.candidate_version)
    paths = model_card.write_model_card(card, tmp_path / "card")
    assert model_card.record_model_card(card, paths, ledger_path=graph.ledger_path) is None


def test_estimates_are_written_with_their_interval_or_say_there_is_none():
    assert model_card.with_ci(0.71234, 0.6901, 0.7349) == "0.712 (0.690–0.735)"
    assert model_card.with_ci(0.5, float("nan"), 0.6) == "0.500 (no CI)"
    assert model_card.with_ci(0.5, None, None) == "0.500 (no CI)"
    assert model_card.with_ci(float("nan"), 0.1, 0.2) == "—"
