"""The card and the TRIPOD+AI report say only what was recorded: the fairness gate under the one evidence rule,
waivers, the previous promotion decision, drift and the declared prediction time — and "not reported" otherwise.

Each test adds its records inside a transaction it rolls back, so the shared graph stays as built.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from clinical_mlops.audit import model_card
from clinical_mlops.features.cohort import load_cohort
from clinical_mlops.fairness import audit as fairness_audit
from clinical_mlops.governance import waivers
from clinical_mlops.registry import change_control
from clinical_mlops_tests.audit._audit_graph import COHORT


@pytest.fixture
def tx(con):
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    finally:
        con.execute("ROLLBACK")


def _items(card) -> dict[str, model_card.TripodItem]:
    return {i.item: i for i in card.tripod_items}


def _summary_counts(card) -> tuple[int, int]:
    match = re.search(r"\*\*(\d+) reported\*\* from recorded facts, \*\*(\d+) not reported\*\*", card.tripod_markdown)
    assert match, "the report states its counts"
    return int(match.group(1)), int(match.group(2))


def _verdict(con, graph, *, rule="recall_gap", slice_="race", group="AfricanAmerican", n=99, estimate=-0.2,
             lower=-0.3, upper=-0.1, verdict="fail", reason="interval wholly below the bound", blocking=True,
             audit_id="audit-1"):
    for statement in fairness_audit.FAIRNESS_DDL:
        con.execute(statement)
    con.execute(
        "INSERT INTO monitoring.fairness_verdicts (audit_id, evaluated_at, cohort, model_name, model_version, "
        "model_role, slice, \"group\", reference_group, n, rule, severity, blocking, bound, estimate, lower, upper, "
        "p_adjusted, verdict, reason, policy_version, policy_sha256) "
        "VALUES (?, ?, ?, ?, ?, 'candidate', ?, ?, 'Caucasian', ?, ?, 'error', "
        "?, -0.05, ?, ?, ?, NULL, ?, ?, '1', 'policy-sha')",
        [audit_id, datetime(2026, 1, 1), COHORT, graph.candidate, graph.candidate_version, slice_, group, n, rule,
         blocking, estimate, lower, upper, verdict, reason],
    )


def _drift_run(con):
    con.execute("CREATE SCHEMA IF NOT EXISTS monitoring")
    con.execute("""CREATE TABLE IF NOT EXISTS monitoring.drift_runs (drift_run_id VARCHAR, computed_at TIMESTAMP,
                   cohort VARCHAR, extract_id VARCHAR, reference_kind VARCHAR, reference_model VARCHAR,
                   reference_version VARCHAR, features_tested INTEGER, features_drifted INTEGER, drift_share DOUBLE,
                   dataset_drift BOOLEAN, severity VARCHAR)""")
    con.execute("INSERT INTO monitoring.drift_runs VALUES ('d1', ?, ?, 'month_002.csv', 'latest_candidate', NULL, NULL, "
                "30, 9, 0.3, true, 'warn')", [datetime(2026, 1, 2), COHORT])


# --- TRIPOD+AI: reported only from facts ------------------------------------------------------------------------


def test_every_item_is_reported_from_named_facts_or_not_reported_and_the_counts_are_computed(con, graph):
    card = model_card.build_model_card(con, graph.baseline, graph.baseline_version)
    items = _items(card)
    assert len(items) == len(card.tripod_items) >= 40, "every checklist item appears once"
    assert {i.status for i in card.tripod_items} <= {model_card.REPORTED, model_card.NOT_REPORTED}
    for item in card.tripod_items:
        assert item.text.strip(), f"item {item.item} is empty"
        if item.reported:
            assert item.facts, f"item {item.item} is reported without a recorded fact behind it"
        else:
            assert item.text.startswith("Not reported"), item.item
    for recorded in ("1", "5a", "6b", "8a", "9a", "10", "12a", "12c", "15", "16", "20b", "23a"):
        assert items[recorded].reported, recorded
    for never_recorded in ("2", "17", "18a", "18b", "18d", "19", "12d", "23b"):
        assert not items[never_recorded].reported, never_recorded
    assert _summary_counts(card) == (card.tripod_reported, card.tripod_not_reported)
    assert card.tripod_reported + card.tripod_not_reported == len(card.tripod_items)
    rows = [line for line in card.tripod_markdown.splitlines() if re.match(r"^\| \d+[a-g]? \|", line)]
    assert len(rows) == len(items)
    assert sum("| reported |" in row for row in rows) == card.tripod_reported
    assert sum("| not reported |" in row for row in rows) == card.tripod_not_reported


def test_without_a_fairness_audit_item_14_is_not_reported_and_with_one_it_is_and_the_count_rises(tx, graph):
    without = model_card.build_model_card(tx, graph.candidate, graph.candidate_version)
    assert not _items(without)["14"].reported and "fairness audit" in _items(without)["14"].text
    _verdict(tx, graph)
    with_audit = model_card.build_model_card(tx, graph.candidate, graph.candidate_version)
    item = _items(with_audit)["14"]
    assert item.reported and "audit-1" in item.text and "AfricanAmerican gap -0.200 [-0.300, -0.100]" in item.text
    assert with_audit.tripod_reported == without.tripod_reported + 1
    assert _summary_counts(with_audit)[0] == _summary_counts(without)[0] + 1


def test_without_a_drift_report_item_27a_is_not_reported_and_with_one_it_is(tx, graph):
    without = model_card.build_model_card(tx, graph.candidate, graph.candidate_version)
    assert not _items(without)["27a"].reported
    assert "No drift report is recorded" in without.markdown
    _drift_run(tx)
    with_drift = model_card.build_model_card(tx, graph.candidate, graph.candidate_version)
    assert _items(with_drift)["27a"].reported and "9 of 30 features drifted" in _items(with_drift)["27a"].text
    assert "`month_002.csv`" in with_drift.markdown and "dataset drift" in with_drift.markdown
    assert with_drift.tripod_reported == without.tripod_reported + 1


def test_without_a_declared_prediction_time_predictors_are_not_reported(con, graph):
    facts = model_card.gather_facts(con, graph.candidate, graph.candidate_version)
    declared = model_card.tripod_items(facts)
    undeclared_facts = dataclasses.replace(facts, spec=dataclasses.replace(facts.spec, prediction_time=None))
    undeclared = model_card.tripod_items(undeclared_facts)
    assert {i.item: i.reported for i in declared}["9a"] is True
    by_item = {i.item: i for i in undeclared}
    assert not by_item["9a"].reported and "prediction time" in by_item["9a"].text
    assert not by_item["9b"].reported
    assert sum(i.reported for i in undeclared) == sum(i.reported for i in declared) - 2
    markdown, _ = model_card.card_markdown(undeclared_facts)
    assert "Prediction time: not declared" in markdown
    assert "All are available at discharge" not in markdown + model_card.tripod_markdown(undeclared_facts, undeclared)


# --- the declared prediction time -----------------------------------------------------------------------------


def test_features_complete_after_the_prediction_time_are_a_red_caveat_on_the_card(con, graph):
    facts = model_card.gather_facts(con, graph.candidate, graph.candidate_version)
    early = dataclasses.replace(facts.spec.prediction_time, at="admission", limitation="Not valid before discharge.")
    markdown, _ = model_card.card_markdown(dataclasses.replace(facts, spec=dataclasses.replace(facts.spec,
                                                                                                prediction_time=early)))
    caveats = markdown.split("## 9. Caveats and Recommendations")[1]
    assert "feature(s) are complete only after the prediction time (admission)" in caveats
    assert "`time_in_hospital`" in caveats and "Not valid before discharge." in caveats


def test_the_prolonged_stay_limitation_reaches_the_card(con, graph):
    facts = model_card.gather_facts(con, graph.candidate, graph.candidate_version)
    prolonged = dataclasses.replace(facts, spec=load_cohort("synthetic_diabetes130_prolonged_stay"))
    markdown, _ = model_card.card_markdown(prolonged)
    assert "**⚠ Prediction-time limitation:**" in markdown and "not valid for a prediction made before" in markdown
    item_26 = {i.item: i for i in model_card.tripod_items(prolonged)}["26"]
    assert "not valid for a prediction made before" in item_26.text


# --- fairness evidence, waivers and the previous decision on the card -------------------------------------------


def test_without_a_fairness_audit_the_card_says_so_in_red(con, graph):
    card = model_card.build_model_card(con, graph.candidate, graph.candidate_version)
    assert card.fairness_rules is None
    gate = card.markdown.split("### Fairness gate (one evidence rule)")[1].split("## 8.")[0]
    assert "**⚠ Fairness was not assessed for this version:**" in gate
    assert '<strong style="color:#b00020">⚠ Fairness was not assessed' in card.html


def test_the_card_shows_each_rule_status_failing_groups_and_groups_lacking_evidence(tx, graph):
    _verdict(tx, graph)
    _verdict(tx, graph, group="Hispanic", n=15, estimate=-0.1, lower=-0.4, upper=0.2, verdict="insufficient_evidence",
             reason="interval straddles the bound")
    _verdict(tx, graph, rule="fpr_gap", group="Hispanic", n=15, estimate=0.01, lower=-0.02, upper=0.03,
             verdict="pass", reason="inside", blocking=False)
    card = model_card.build_model_card(tx, graph.candidate, graph.candidate_version)
    assert dict((r, s) for r, _, s in card.fairness_rules) == {"recall_gap": "fail", "fpr_gap": "pass"}
    gate = card.markdown.split("### Fairness gate (one evidence rule)")[1].split("## 8.")[0]
    assert "`audit-1`" in gate
    assert re.search(r"\| recall_gap \| error \| yes \| \*\*⚠ fail\*\* \|", gate)
    assert "| fpr_gap | error | no | pass |" in gate
    failing = gate.split("**recall_gap: groups outside the bound**")[1].split("**")[0]
    assert "| race | AfricanAmerican | 99 | -0.200 [-0.300, -0.100] |" in failing
    lacking = gate.split("**recall_gap: required groups without sufficient evidence**")[1]
    assert "| race | Hispanic | 15 | -0.100 [-0.400, +0.200] |" in lacking
    caveats = card.markdown.split("## 9. Caveats and Recommendations")[1]
    assert "Blocking fairness rule recall_gap: fail" in caveats


def test_not_assessable_groups_and_the_power_column_are_shown_when_the_gate_gives_them(con, graph):
    facts = model_card.gather_facts(con, graph.candidate, graph.candidate_version)

    small = fairness_audit.GroupFinding("race", "Asian", 5, None, None, None, "insufficient_evidence",
                                        "below minimum", min_detectable_gap=0.41)
    rule = fairness_audit.RuleStatus("recall_gap", "error", True, "insufficient_evidence", "1 group(s) without "
                                     "sufficient evidence", insufficient_required=(small,), not_assessable=(small,))
    gate = fairness_audit.FairnessGate("audit-2", graph.candidate, graph.candidate_version, "p", (rule,))
    facts = dataclasses.replace(facts, governance=dataclasses.replace(facts.governance, gate=gate))
    markdown, _ = model_card.card_markdown(facts)
    assert "**recall_gap: groups not assessable (listed, acknowledged at promotion)**" in markdown
    assert "smallest gap detectable (80% power)" in markdown and "| race | Asian | <11 | — [—, —] | 0.410 |" in markdown
    assert "Not assessable (too little evidence, acknowledged at promotion): race=Asian." in markdown
    assert "race=Asian 0.410" in {i.item: i for i in model_card.tripod_items(facts)}["10"].text


def test_the_card_lists_the_versions_waivers_active_or_expired(tx, graph):
    common = dict(cohort=COHORT, model_name=graph.candidate, model_version=graph.candidate_version,
                  policy_sha256="p")
    waivers.record_waiver(tx, criterion="fairness:recall_gap", missing_evidence=["race=Hispanic: CI straddles"],
                          approved_by="Dr Ada Chief", reason="small group, monitored monthly", **common)
    long_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=400)
    waivers.record_waiver(tx, criterion="not_assessable_groups", missing_evidence=["race=Asian"], approved_by="Dr Bo",
                          reason="acknowledged", now=long_ago, expires_at=long_ago + timedelta(days=30), **common)
    card = model_card.build_model_card(tx, graph.candidate, graph.candidate_version)
    section = card.markdown.split("### Waivers")[1].split("###")[0]
    active = next(line for line in section.splitlines() if "fairness:recall_gap" in line)
    assert "Dr Ada Chief" in active and "small group, monitored monthly" in active
    assert "race=Hispanic: CI straddles" in active and active.rstrip().endswith("| yes |")
    expired = next(line for line in section.splitlines() if "not_assessable_groups" in line)
    assert "**⚠ expired**" in expired and f"{long_ago:%Y-%m-%d %H:%M}" in expired
    assert card.waiver_criteria == ("not_assessable_groups", "fairness:recall_gap")


def test_the_card_shows_the_previous_promotion_decision_read_defensively(tx, graph):
    card = model_card.build_model_card(tx, graph.candidate, graph.candidate_version)
    assert "No promotion decision is recorded for this version yet" in card.markdown
    change_control.ensure_tables(tx)  # record_decision opens its own transaction: insert its row directly
    tx.execute(
        "INSERT INTO audit.promotion_decisions (decision_id, decided_at, cohort, model_name, challenger_version, "
        "champion_version, mode, passed, promoted, modification_kinds_json, criteria_json, reason, actor, "
        "policy_sha256, policy_version, report_id) "
        "VALUES ('d1', ?, ?, ?, ?, NULL, 'absolute', false, false, '[]', '[]', "
        "'recall_gap: insufficient evidence, no waiver', 'gate', 'p', '1', NULL)",
        [datetime(2026, 1, 3, 9, 30), COHORT, graph.candidate, graph.candidate_version])
    section = model_card.build_model_card(tx, graph.candidate, graph.candidate_version).markdown
    section = section.split("### Previous promotion decision")[1].split("###")[0]
    assert "2026-01-03 09:30 UTC (absolute): **blocked**, by gate." in section and "recall_gap: insufficient evidence, no waiver" in section
    tx.execute("ALTER TABLE audit.promotion_decisions ADD COLUMN IF NOT EXISTS status VARCHAR")
    tx.execute("ALTER TABLE audit.promotion_decisions ADD COLUMN IF NOT EXISTS waiver_ids_json VARCHAR")
    tx.execute("UPDATE audit.promotion_decisions SET status = 'pending_approval', waiver_ids_json = ?",
               [json.dumps(["w-1"])])
    section = model_card.build_model_card(tx, graph.candidate, graph.candidate_version).markdown
    assert "**pending_approval**" in section and "Waivers relied on: `w-1`." in section


# --- in the graph ------------------------------------------------------------------------------------------------


def test_the_card_follows_evaluation_fairness_and_mitigation_in_the_graph():
    from clinical_mlops.definitions import defs as load_defs

    graph = load_defs().resolve_asset_graph()
    for spec in ("synthetic_diabetes130_readmission_30d", "synthetic_diabetes130_prolonged_stay"):
        parents = graph.get(dg.AssetKey([spec, "model_card"])).parent_keys
        assert parents == {dg.AssetKey([spec, name]) for name in ("model_evaluation", "fairness_report",
                                                                   "mitigated_model")}


def test_the_materialized_card_reports_its_tripod_counts_and_fairness_status(graph):
    event = graph.instance.get_latest_materialization_event(dg.AssetKey([COHORT, "model_card"]))
    metadata = event.asset_materialization.metadata
    reported = metadata["candidate_tripod_items_reported"].value
    not_reported = metadata["candidate_tripod_items_not_reported"].value
    assert metadata["candidate_tripod_items"].value == f"{reported} reported, {not_reported} not reported"
    assert not_reported > 0, "items without a recorded fact are counted as not reported"
    assert metadata["candidate_fairness"].value == {"assessed": False}
