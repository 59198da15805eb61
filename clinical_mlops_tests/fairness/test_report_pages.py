"""The fairness pages through the one renderer (core.reporting.page), and the report's checks as plain data."""

from __future__ import annotations

import html
import re
from types import SimpleNamespace

import dagster as dg
import pandas as pd

from clinical_mlops.core import evidence, reporting
from clinical_mlops.fairness import report as fairness_report, rule_checks
from clinical_mlops.fairness.root_cause import Finding, RootCause
from clinical_mlops_tests.fairness.test_evidence_rule import _audit, _frame, _policy

CHECK_METADATA = ["policy_version", "policy_sha256", "bound", "severity_in_policy", "status", "groups_pass",
                  "groups_fail", "groups_insufficient_evidence", "failing_groups", "insufficient_required_groups",
                  "not_assessable_groups", "required_groups"]
"""The metadata of a fairness rule's check, in order (then ``incident_id``, ``incident_owner`` when one opened)."""
_TAG = re.compile(r"<(p|div|table|tr|td|th|h\d|img|b|ul|li|code|span)\b")


def test_a_page_without_the_new_options_renders_as_before():
    md = "# T\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    assert reporting.page(md, "T & co") == (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>T &amp; co</title><style>{reporting.PAGE_STYLE}</style></head><body>\n"
        + reporting.markdown_to_html(md) + "\n</body></html>\n")
    assert "class=" not in reporting.markdown_to_html(md)


def test_rows_are_coloured_by_the_named_column_only():
    md = ("| verdict | note |\n|---|---|\n| fail | pass |\n| pass | x |\n| other | fail |\n\n"
          "| group | recall-gap verdict |\n|---|---|\n| fail | fail |\n")
    page = reporting.page(md, "t", style=reporting.EVIDENCE_STYLE,
                          row_classes={"verdict": {"fail": "fail", "pass": "pass"}})
    assert page.count('<tr class="fail">') == 1 and page.count('<tr class="pass">') == 1 and page.count("<tr>") == 4  # two heads, two body rows
    assert reporting.EVIDENCE_STYLE in page


def test_escaped_text_renders_as_itself_and_a_png_as_a_data_uri():
    text = "a_b *c* [d](e) <11 & x|y `z` \\ w\nnext"
    body = reporting.markdown_to_html(f"| h |\n|---|\n| {reporting.escape_markdown(text)} |")
    assert f"<td>{html.escape(text.replace(chr(10), ' '), quote=False)}</td>" in body
    image = reporting.markdown_to_html(reporting.png_markdown(b"\x89PNG", "recall [by] race"))
    assert '<img src="data:image/png;base64,iVBORw==" alt="recall [by] race" />' in image


def test_the_audit_page_is_markdown_rendered_with_rows_coloured_by_status():
    policy = _policy()
    result = _audit(_frame({"Caucasian": 3000, "AfricanAmerican": 1000, "Asian": 8},
                           penalty={"AfricanAmerican": 0.3}), policy)
    markdown = fairness_report.audit_markdown(result, title="Fairness report — t", model="m_1 v1", policy=policy,
                                              extra_sections=["## More\n\nsomething"])
    assert _TAG.search(markdown) is None, "no hand-written HTML left in the report"
    page = fairness_report.render_audit_html(result, title="Fairness report — t", model="m_1 v1", policy=policy,
                                             extra_sections=["## More\n\nsomething"])
    assert page == reporting.page(markdown, "Fairness report — t", style=reporting.EVIDENCE_STYLE, row_classes={
        "status": {"PASS": "pass", "FAIL": "fail", "INSUFFICIENT EVIDENCE (not a pass)": "insufficient_evidence"},
        "verdict": {s: s for s in evidence.STATUSES}})
    assert "<h1>Fairness report — t</h1>" in page and "<strong>Model</strong> m_1 v1" in page
    assert "<h2>Status by policy rule</h2>" in page and '<tr class="fail">' in page
    assert "<td>FAIL</td>" in page and "<h2>More</h2>" in page
    assert page.count("data:image/png;base64,") == 2  # the recall-gap forest plot, recall by race
    assert f"&lt;{fairness_report.SMALL_CELL}" in page  # the Asian cell, suppressed


def test_the_root_cause_and_tradeoff_sections_keep_their_content():
    cause = RootCause("race", "AfricanAmerican", "Caucasian", [
        Finding("labels", True, "Lower recorded prevalence", "0.21 vs 0.30 (p < 0.05)"),
        Finding("missingness", False, "Missingness similar", "A1C_result | max_glu_serum")],
        "The evidence points to the labels.", {"feature_shift": pd.DataFrame({"feature": ["num_lab_procedures"],
                                                                              "smd": [0.4567], "n": [12]})})
    policy = _policy()
    page = fairness_report.root_cause_html([cause], title="Root cause — t", model="m v1", policy=policy)
    assert "<h2>race = AfricanAmerican (reference Caucasian)</h2>" in page
    assert "<strong>Conclusion.</strong> The evidence points to the labels." in page
    assert "<li>⚠️ <strong>Lower recorded prevalence</strong> (labels): 0.21 vs 0.30 (p &lt; 0.05)</li>" in page
    assert "A1C_result | max_glu_serum" in page and "<h3>feature shift</h3>" in page
    assert "<td>num_lab_procedures</td>" in page and ">0.457</td>" in page and ">12</td>" in page
    table = pd.DataFrame([{"method": "none (candidate)", "kind": "—", "needs_sensitive_attribute": False,
                           "auroc": 0.7, "auroc_change": 0.0, "recall": 0.5, "alerts_per_100": 20.0, "recall_gap": -0.2,
                           "recall_gap_lower": -0.3, "recall_gap_upper": -0.1, "max_abs_recall_gap": 0.2,
                           "blocking_fails": 1, "chosen": False},
                          {"method": "group_thresholds", "kind": "post-processing", "needs_sensitive_attribute": True,
                           "auroc": 0.7, "auroc_change": 0.0, "recall": 0.5, "alerts_per_100": 21.0, "recall_gap": 0.01,
                           "recall_gap_lower": float("nan"), "recall_gap_upper": 0.1, "max_abs_recall_gap": 0.05,
                           "blocking_fails": 0, "chosen": True}])
    chosen = SimpleNamespace(method="group_thresholds", attributes=("race",), needs_sensitive_attribute=True)
    section = reporting.markdown_to_html(fairness_report.tradeoff_section(table, "smallest |gap|", chosen))
    assert "<h2>Mitigation trade-off</h2>" in section and "<th>gap CI</th>" in section
    assert "<td>[-0.300, -0.100]</td>" in section and "<td>—</td>" in section and "<td>✔</td>" in section
    assert "<p>smallest |gap|</p>" in section
    assert "<strong>group_thresholds</strong> needs the sensitive attribute(s) race at prediction time." in section


def test_the_report_checks_are_decided_in_the_domain_as_plain_data():
    declared = _policy(lambda fp: fp["metrics"].update(fpr_gap={"max_difference": 0.10, "severity": "warn"}))
    policy = _policy()  # the run's policy lacks the declared fpr_gap rule
    result = _audit(_frame({"Caucasian": 3000, "AfricanAmerican": 1000}, penalty={"AfricanAmerican": 0.3}), policy)
    incident = SimpleNamespace(incident_id="INC-1", owner="model_owner")
    checks = rule_checks.rule_checks(result, declared, {"recall_gap": incident})
    assert [c.check_name for c in checks] == [r.check_name for r in declared.fairness.metrics]
    recall, missing = checks
    assert recall.evidence.status == evidence.FAIL and recall.blocking and recall.description.startswith("race=AfricanAmerican: ")
    assert list(recall.metadata) == [*CHECK_METADATA, "incident_id", "incident_owner"]
    assert recall.metadata["required_groups"] == rule_checks.required_groups(result)
    assert recall.metadata["required_groups"][0]["group"] == "AfricanAmerican"
    assert missing.evidence.status == evidence.INSUFFICIENT and not missing.blocking and missing.description is None
    assert missing.evidence.reason.startswith("rule fpr_gap is not in the policy used for this run (sha256 ")
    assert list(missing.metadata) == ["policy_version", "policy_sha256", "severity_in_policy"]

    from clinical_mlops.defs.fairness.assets import check_result

    failed, absent = (check_result(c) for c in checks)
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert isinstance(failed.metadata["failing_groups"], dg.JsonMetadataValue)
    assert failed.metadata["incident_id"].value == "INC-1"
    assert not absent.passed and absent.severity == dg.AssetCheckSeverity.WARN
    assert absent.description.startswith("insufficient evidence: rule fpr_gap is not in the policy used")
