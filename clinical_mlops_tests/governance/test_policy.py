"""The governance policy: loads, validates with clear messages, hashes, and drives the document."""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

import pytest
import yaml

from clinical_mlops.cli.fairness import register as register_fairness_cli
from clinical_mlops.fairness import report as fairness_report
from clinical_mlops.governance.policy import SHIPPED_POLICY_PATH, PolicyError, for_cohort, load_policy, parse_policy
from clinical_mlops_tests.conftest import READMISSION
from clinical_mlops_tests.governance._policy_text import declare_source_attributes
from clinical_mlops_tests.helpers import run_cli

_cli = partial(run_cli, register_fairness_cli)


@pytest.fixture(scope="module")
def raw() -> dict:
    """The shipped policy, declaring diabetes130's sensitive attributes itself (the model still accepts them)."""
    return declare_source_attributes(yaml.safe_load(SHIPPED_POLICY_PATH.read_text()))


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_shipped_policy_loads_with_typed_sections():
    policy = load_policy()
    assert policy.version == "2026.11.1"
    assert policy.sha256 == hashlib.sha256(SHIPPED_POLICY_PATH.read_bytes()).hexdigest()
    recall = policy.fairness.metric("recall_gap")
    assert (recall.kind, recall.bound, recall.blocking, recall.check_name) == (
        "difference", 0.10, True, "recall_gap_within_policy")
    dpr = policy.fairness.metric("demographic_parity_ratio")
    assert (dpr.kind, dpr.bound, dpr.blocking) == ("ratio", 0.80, False)
    # the groups are the source's: a bare policy has none, the cohort's source supplies them
    assert policy.fairness.sensitive_attributes == () and policy.fairness.intersections == ()
    from clinical_mlops.features.cohort import load_cohort

    scoped = for_cohort(policy, load_cohort(READMISSION))
    assert scoped.sha256 == policy.sha256 and scoped.fairness.metrics == policy.fairness.metrics
    assert scoped.fairness.attribute("race").reference == "Caucasian"
    assert scoped.fairness.intersections == (("race", "gender"),)
    assert policy.escalation.for_severity("open_incident").within_hours == 4
    assert policy.owner_for("block_promotion") == "model_owner"
    assert policy.drift.correction == "benjamini_hochberg" and policy.drift.evidently_sample_rows == 20000
    assert policy.change_control.acceptance.max_auroc_drop == 0.02
    assert policy.change_control.absolute_acceptance.min_auroc == 0.60


def test_hash_changes_with_the_bytes(tmp_path, raw):
    first = load_policy(_write(tmp_path, raw))
    raw = {**raw, "version": "2026.11.2"}
    second = load_policy(_write(tmp_path, raw))
    assert first.sha256 != second.sha256 and second.version == "2026.11.2"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["fairness"].pop("min_group_size"), "fairness.min_group_size is required"),
        (lambda d: d["fairness"]["metrics"]["recall_gap"].update(max_difference=1.5),
         "fairness.metrics.recall_gap.max_difference must be a number in (0"),
        (lambda d: d["fairness"]["metrics"]["recall_gap"].update(severity="panic"),
         "fairness.metrics.recall_gap.severity 'panic' is not one of"),
        (lambda d: d["fairness"]["metrics"].update(recal_gap={"max_difference": 0.1, "severity": "warn"}),
         "fairness.metrics.recal_gap is not a known fairness metric"),
        (lambda d: d["fairness"]["metrics"]["demographic_parity_ratio"].update(max_difference=0.2),
         "is a ratio metric"),
        (lambda d: d["fairness"].update(intersections=[["race", "religion"]]),
         "fairness.intersections[0] names attributes not declared"),
        (lambda d: d["fairness"]["sensitive_attributes"]["race"]["reference_population"].update(Caucasian=0.2),
         "shares must sum to 1"),
        (lambda d: d["escalation"]["warn"].update(notify=["janitor"]), "escalation.warn.notify names unknown owner role"),
        (lambda d: d["drift"].update(severity="maybe"), "drift.severity 'maybe' is not one of"),
        (lambda d: d.update(extra={}), "unknown top-level sections ['extra']"),
        (lambda d: d["change_control"].update(allowed_modifications=["algorithm_change"]),
         "both allowed and requiring review"),
    ],
)
def test_invalid_policy_is_rejected_with_the_field_named(tmp_path, raw, edit, message):
    import copy

    data = copy.deepcopy(raw)
    edit(data)
    with pytest.raises(PolicyError) as error:
        load_policy(_write(tmp_path, data))
    assert message in str(error.value)
    assert "policy.yaml" in str(error.value)


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(PolicyError, match="not valid YAML"):
        parse_policy("version: [unclosed", source="bad.yaml")
    with pytest.raises(PolicyError, match="policy file not found"):
        load_policy(tmp_path / "nope.yaml")


def test_governance_document_is_generated_from_the_policy():
    policy = load_policy()
    doc = fairness_report.governance_markdown(policy)
    assert policy.sha256 in doc and policy.version in doc
    for rule in policy.fairness.metrics:
        assert f"`{rule.check_name}`" in doc
    assert "| block_promotion |" in doc and "24 h" in doc and "4 h" in doc
    assert policy.owners.clinical_lead in doc
    page = fairness_report.governance_html(policy)
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page and "recall_gap_within_policy" in page


def test_cli_writes_the_governance_document_and_rejects_a_bad_policy(tmp_path, raw, capsys):
    out = tmp_path / "governance.html"
    assert _cli(["governance", "--format", "html", "--out", str(out)]) == 0
    assert "recall_gap_within_policy" in out.read_text()
    bad = dict(raw, fairness={**raw["fairness"], "confidence": 2})
    assert _cli(["governance", "--policy", str(_write(tmp_path, bad))]) == 2
    assert "fairness.confidence must be a number" in capsys.readouterr().err


def test_cli_lists_incidents_and_summary_on_an_empty_warehouse(tmp_path, capsys):
    db = str(tmp_path / "w.duckdb")
    assert _cli(["incidents", "--warehouse", db]) == 0
    assert "no incidents" in capsys.readouterr().out
    assert _cli(["fairness-summary", "--warehouse", db]) == 0
    assert '"candidate": null' in capsys.readouterr().out


# --- the pydantic models, their errors, and the cached loader --------------------------------


def test_pydantic_error_names_the_nested_field_in_one_line(tmp_path, raw):
    import copy

    data = copy.deepcopy(raw)
    data["escalation"]["open_incident"]["within_hours"] = "soon"
    data["fairness"]["sensitive_attributes"]["race"]["reference_population"]["Asian"] = 7
    with pytest.raises(PolicyError) as error:
        load_policy(_write(tmp_path, data))
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "policy.yaml") + ": ")
    assert "escalation.open_incident.within_hours must be a number, got 'soon'" in message
    assert "fairness.sensitive_attributes.race.reference_population.Asian must be a number in [0, 1], got 7" in message


def test_unknown_keys_are_rejected_where_the_section_is_closed(raw):
    import copy

    data = copy.deepcopy(raw)
    data["escalation"]["critical"] = dict(data["escalation"]["warn"])
    data["sha256"] = "0" * 64  # the hash comes from the bytes, never from the file's content
    with pytest.raises(PolicyError) as error:
        parse_policy(yaml.safe_dump(data), source="p.yaml")
    message = str(error.value)
    assert message.startswith("p.yaml: unknown top-level sections ['sha256'] (expected version, owners,")
    assert "escalation has unknown severities ['critical'] (expected warn, block_promotion, open_incident)" in message


def test_policy_sections_are_frozen_dataclasses_validated_again_on_replace():
    import dataclasses

    from pydantic import ValidationError

    policy = load_policy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.fairness.min_group_size = 1  # type: ignore[misc]
    assert isinstance(policy.fairness.metrics, tuple) and isinstance(policy.fairness.sensitive_attributes, tuple)
    rule = policy.fairness.metric("recall_gap")
    assert dataclasses.replace(rule, direction="both").direction == "both"
    with pytest.raises(ValidationError, match=r"must be a number in \(0, 1\], got 2"):
        dataclasses.replace(rule, max_difference=2)
    with pytest.raises(ValidationError, match="is a difference metric: give max_difference, not min_ratio"):
        dataclasses.replace(rule, min_ratio=0.8)


def test_loader_returns_one_object_per_file_and_rereads_an_edited_file(tmp_path, raw, monkeypatch):
    path = _write(tmp_path, raw)
    first = load_policy(path)
    assert load_policy(path) is first and load_policy(str(path)) is first
    # Same size, written at once: the cache compares content, not timestamps.
    path.write_bytes(path.read_bytes().replace(b"2026.11.1", b"2026.11.9"))
    edited = load_policy(path)
    assert edited is not first and edited.version == "2026.11.9"
    assert edited.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_policy(path) is edited
    # With no argument: the shipped file, or CLINICAL_MLOPS_POLICY as set at call time.
    assert load_policy() is load_policy() is load_policy(SHIPPED_POLICY_PATH)
    monkeypatch.setenv("CLINICAL_MLOPS_POLICY", str(path))
    assert load_policy() is edited


def test_the_monitoring_section_is_optional_and_checked(raw):
    import copy

    data = copy.deepcopy(raw)
    data.pop("monitoring", None)
    assert parse_policy(yaml.safe_dump(data), source="p.yaml").monitoring.label_delay_days == 30.0
    data["monitoring"] = {"window_period": "fortnight", "label_delay_days": 14, "max_calibration_error": 0}
    with pytest.raises(PolicyError) as error:
        parse_policy(yaml.safe_dump(data), source="p.yaml")
    message = str(error.value)
    assert "monitoring.window_period" in message and "fortnight" in message
    assert "monitoring.max_calibration_error" in message
    data["monitoring"] = {"window_period": "day", "label_delay_days": 14}
    parsed = parse_policy(yaml.safe_dump(data), source="p.yaml").monitoring
    assert (parsed.window_period, parsed.label_delay_days, parsed.max_calibration_error) == ("day", 14.0, 0.05)
