"""A refused extract's error line: one line, what happened, no Dagster class name, no "see the UI"."""

from __future__ import annotations

from types import SimpleNamespace

from clinical_mlops.cli import errors

GATE = {"extract_id": "x.csv", "findings_detail": [
    {"column": "payer_code", "identifier": "ssn", "location": "values", "rows": 100},
    {"column": "patient_name", "identifier": "name", "location": "column_name", "rows": 0}]}


def _outcome(**kwargs):
    return SimpleNamespace(**{"error": None, "error_class": None, "blocking_failures": [], "check_metadata": {},
                              **kwargs})


def test_identifier_refusal_names_column_kind_and_count():
    line = errors.run_error(_outcome(
        error="dagster._core.errors.DagsterAssetCheckFailedError: 1 blocking asset check failed\nmore",
        error_class="DagsterAssetCheckFailedError", blocking_failures=[f"synthetic_diabetes130/{errors.GATE_CHECK}"],
        check_metadata={f"synthetic_diabetes130/{errors.GATE_CHECK}": GATE}))
    assert line == ("extract x.csv refused by the identifier gate: column payer_code holds SSN-like values "
                    "(100 rows), column patient_name is named like personal names; nothing landed")


def test_other_errors_lose_dagster_names_and_never_point_at_the_ui():
    line = errors.run_error(_outcome(error="dagster._core.errors.DagsterExecutionStepExecutionError: boom\ndetails",
                                    error_class="DagsterExecutionStepExecutionError"))
    assert line == "boom"
    failed = errors.run_error(_outcome(
        blocking_failures=["synthetic_diabetes130/validated_extract:landed_rows_reconcile"],
        check_metadata={"synthetic_diabetes130/validated_extract:landed_rows_reconcile": {"evidence_reason": "200 records but 199 rows"}}))
    assert failed == "blocking check failed: synthetic_diabetes130/validated_extract:landed_rows_reconcile (200 records but 199 rows)"
    for text in (line, failed):
        assert "Dagster" not in text and "UI" not in text and "\n" not in text
