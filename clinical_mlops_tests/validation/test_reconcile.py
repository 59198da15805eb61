"""``landed_rows_reconcile`` at the Dagster check level: the file's records, counted by the landing step
apart from the insert, against the rows landed and the rows validated or quarantined."""

from __future__ import annotations

import dagster as dg

from clinical_mlops.core import warehouse
from clinical_mlops.ingestion import landing
from clinical_mlops_tests.conftest import synthetic_assets, synthetic_source  # noqa: E402

SYNTHETIC_SOURCE = synthetic_source()


def _run(defs, workspace, instance, name, group):
    return dg.materialize(synthetic_assets(defs, {"ingestion", "validation"}), selection=dg.AssetSelection.groups(group),
                          partition_key=name, instance=instance, resources=workspace.resources(), raise_on_error=False)


def _reconcile(result) -> dg.AssetCheckEvaluation:
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "landed_rows_reconcile"]
    return check


def _landed(defs, workspace, frame, name="month_000.csv"):
    frame.to_csv(workspace.landing / name, index=False, lineterminator="\n")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("synthetic_diabetes130_extracts", [name])
    assert _run(defs, workspace, instance, name, "ingestion").success
    return instance


def test_records_not_lines_are_counted_at_landing(workspace, small_encounters):
    frame = small_encounters.head(30).copy()
    frame.loc[4, "medical_specialty"] = "Cardiology\nsecond line"  # a quoted field holding a line break
    path = workspace.landing / "newline.csv"
    frame.to_csv(path, index=False, lineterminator="\n")
    assert len(path.read_text().splitlines()) == 32 and landing.count_file_records(path) == 30
    with warehouse.connect(workspace.warehouse) as con:
        result = landing.land_extract(con, path, SYNTHETIC_SOURCE)
        stored = con.execute("SELECT file_rows FROM raw.extracts WHERE extract_id = 'newline.csv'").fetchone()[0]
    assert result.file_rows == stored == result.rows_landed == 30


def test_reconcile_passes_when_file_landed_and_validated_rows_agree(defs, workspace, small_encounters):
    instance = _landed(defs, workspace, small_encounters.head(200))
    check = _reconcile(_run(defs, workspace, instance, "month_000.csv", "validation"))
    assert check.passed and check.metadata["evidence"].value == "pass"
    assert check.metadata["file_rows"].value == check.metadata["rows_landed"].value == 200
    assert check.partition == "month_000.csv" and check.metadata["extract_id"].value == "month_000.csv"


def test_reconcile_fails_when_a_landed_row_is_lost(defs, workspace, small_encounters):
    instance = _landed(defs, workspace, small_encounters.head(200))
    with warehouse.connect(workspace.warehouse) as con:  # the insert path lost a row
        con.execute("DELETE FROM raw.synthetic_diabetes130 WHERE _extract_id = 'month_000.csv' AND _row_number = 17")
    result = _run(defs, workspace, instance, "month_000.csv", "validation")
    check = _reconcile(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["evidence"].value == "fail"
    assert "200 records but 199 rows" in check.metadata["evidence_reason"].value
    assert not result.success, "a blocking reconcile failure stops the run"


def test_reconcile_fails_when_the_count_disagrees(defs, workspace, small_encounters):
    instance = _landed(defs, workspace, small_encounters.head(200))
    with warehouse.connect(workspace.warehouse) as con:  # inject a mismatch in the independent count
        con.execute("UPDATE raw.extracts SET file_rows = 201 WHERE extract_id = 'month_000.csv'")
    check = _reconcile(_run(defs, workspace, instance, "month_000.csv", "validation"))
    assert not check.passed and check.metadata["evidence"].value == "fail"


def test_reconcile_without_a_file_count_is_insufficient_evidence(defs, workspace, small_encounters):
    instance = _landed(defs, workspace, small_encounters.head(200))
    with warehouse.connect(workspace.warehouse) as con:  # landed before the count existed
        con.execute("UPDATE raw.extracts SET file_rows = NULL WHERE extract_id = 'month_000.csv'")
    check = _reconcile(_run(defs, workspace, instance, "month_000.csv", "validation"))
    assert not check.passed and check.metadata["evidence"].value == "insufficient_evidence"
