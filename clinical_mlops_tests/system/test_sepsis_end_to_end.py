"""The second real source end to end on the published files: ``demo --source`` on the Norwegian primary cohort
picks the ``sepsis_survival`` contract by its header, trains ``sepsis_mortality`` on a row split, and lands the
South Korean cohort (declared ``external_site`` beside it) as a later extract: a drift report (a transport check
across sites) and an external evaluation of the champion with intervals. Skips when ../shared is absent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import pytest

from clinical_mlops_tests.conftest import SEPSIS_DATA

pytestmark = pytest.mark.e2e

PRIMARY = SEPSIS_DATA / "s41598-020-73558-3_sepsis_survival_primary_cohort.csv"
EXTERNAL = "s41598-020-73558-3_sepsis_survival_validation_cohort.csv"


@pytest.fixture(scope="module")
def sepsis_demo(tmp_path_factory):
    if not PRIMARY.exists():
        pytest.skip("the sepsis survival files are not at ../shared/data/sepsis_survival (skipped on a user's clone)")
    root = tmp_path_factory.mktemp("sepsis")
    (root / "dagster_home").mkdir()
    env = {**os.environ, "CLINICAL_MLOPS_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "dagster_home"),
           "CLINICAL_MLOPS_PSEUDONYM_KEY": "sepsis-test-key"}
    env.pop("MLFLOW_TRACKING_URI", None)
    ran = subprocess.run([sys.executable, "-m", "clinical_mlops.cli.main", "demo", "--source", str(PRIMARY),
                          "--summary-json", str(root / "summary.json")],
                         env=env, capture_output=True, text=True, timeout=1200, cwd=root)
    assert ran.returncode == 0, ran.stderr[-4000:]
    return root, json.loads((root / "summary.json").read_text()), ran.stdout


def test_the_header_picks_the_contract_and_every_row_lands(sepsis_demo):
    _, summary, _ = sepsis_demo
    assert summary["source"] == "sepsis_survival" and not summary["failures"]
    assert [(e["extract_id"], e["rows_landed"], e["rows_quarantined"]) for e in summary["extracts"]] == [
        (PRIMARY.name, 110_204, 0), (EXTERNAL, 137, 0)]  # identical rows are legitimate: none quarantined


def test_the_model_trains_on_the_primary_cohort_by_row_and_never_on_the_external_site(sepsis_demo):
    root, summary, _ = sepsis_demo
    candidate = summary["models"]["sepsis_mortality"]["candidate"]
    assert candidate["train_rows"] + candidate["test_rows"] == 110_204
    auroc = summary["models"]["sepsis_mortality"]["evaluation"]["candidate_auroc"]
    assert 0.6 < auroc < 0.8  # age, sex and episode number alone (Chicco & Jurman report ~0.7)
    with duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True) as con:
        inputs = json.loads(con.execute("SELECT input_extracts_json FROM ml.model_versions "
                                        "WHERE model_name = 'sepsis_mortality_candidate'").fetchone()[0])
        split_rows = con.execute("SELECT count(*) FROM ml.splits WHERE cohort = 'sepsis_mortality'").fetchone()[0]
    assert [e["extract_id"] for e in inputs] == [PRIMARY.name] and split_rows == 110_204
    card = root / "data" / "reports" / "sepsis_mortality" / "model_cards" / "sepsis_mortality_candidate_v1"
    assert "no patient id" in (card / "model_card.md").read_text()  # the card says why the split is by row


def test_the_external_site_gets_a_transport_check_and_a_wide_external_evaluation(sepsis_demo):
    root, summary, _ = sepsis_demo
    story = summary["cohorts"]["sepsis_mortality"]
    assert EXTERNAL in story["drift"]
    (external,) = [e for e in story["external_evaluation"] if e["extract_id"] == EXTERNAL]
    assert (external["relation"], external["n"], external["n_positive"]) == ("external_site", 137, 24)
    assert external["auroc_lower"] < external["auroc"] < external["auroc_upper"]
    assert external["auroc_upper"] - external["auroc_lower"] > 0.15  # wide at n = 137, and the report says so
    report = (root / "data" / "reports" / "sepsis_mortality" / "external" / f"{EXTERNAL}.md").read_text()
    assert "cannot confirm or refute transport" in report
