"""Malformed contracts and cohorts, through the command line: one line naming the file and the field,
a non-zero exit, and nothing landed (no warehouse file, no landing folder, no run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinical_mlops.cli import main as cli

CONTRACT = """\
name: ward
description: A ward extract (test).
provenance: Test.
licence: CC0
columns:
  stay_id: {type: integer}
  age: {type: integer, range: {min: 0, max: 110}}
  sex: {type: category, allowed_values: ["F", "M"]}
  died: {type: integer, allowed_values: [0, 1]}
roles: {encounter_id: stay_id, outcomes: [died]}
sensitive_attributes:
  sex: {reference: F}
"""

BASE_SQL = ("SELECT stay_id AS encounter_id, extract_id, row_number, age, died FROM source_rows\n")

COHORT = """\
name: ward_mortality
source: ward
title: Ward mortality (test)
target: {column: died_on_ward, sql: "died = 1", definition: Death (died = 1)., source: Field died.}
features: {numeric: [age]}
sensitive_attributes: [sex]
split: {strategy: row}
"""

CASES = {
    "unknown_type": ("sources", "ward.yaml", CONTRACT.replace("{type: integer, range", "{type: int64, range"),
                     "sources/ward.yaml: columns.age.type: unknown type 'int64'"),
    "role_naming_no_column": ("sources", "ward.yaml", CONTRACT.replace("outcomes: [died]", "outcomes: [death]"),
                              "sources/ward.yaml: roles.outcomes.0: 'death' is not a column of the contract"),
    "vocabulary_not_a_list": ("sources", "ward.yaml", CONTRACT.replace('allowed_values: ["F", "M"]',
                                                                      'allowed_values: "F, M"'),
                              "sources/ward.yaml: columns.sex.allowed_values: must be a list of values, got a string"),
    "sensitive_attribute_not_a_column": ("sources", "ward.yaml", CONTRACT.replace("  sex: {reference: F}",
                                                                                  "  race: {reference: White}"),
                                         "sources/ward.yaml: sensitive_attributes.race.column"),
    "cohort_unknown_source": ("cohorts", "ward_mortality.yaml", COHORT.replace("source: ward", "source: wards"),
                              "cohorts/ward_mortality.yaml: source: 'wards': no source named 'wards'"),
    "sql_reads_a_missing_column": ("cohorts", "ward.sql", BASE_SQL.replace("age,", "age, weight,"),
                                   "cohorts/ward_mortality.yaml: base_sql (ward.sql): reads column 'weight', which it "
                                   "does not have (source ward)"),
    "feature_not_in_the_sql": ("cohorts", "ward_mortality.yaml", COHORT.replace("numeric: [age]", "numeric: [age, bmi]"),
                               "cohorts/ward_mortality.yaml: features.numeric.1: 'bmi' is not a column of the "
                               "cohort's SQL"),
}


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    for folder, name, text in (("sources", "ward.yaml", CONTRACT), ("cohorts", "ward.sql", BASE_SQL),
                               ("cohorts", "ward_mortality.yaml", COHORT)):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / name).write_text(text)
    monkeypatch.setenv("CLINICAL_MLOPS_SOURCES_DIR", str(tmp_path / "sources"))
    monkeypatch.setenv("CLINICAL_MLOPS_COHORTS_DIR", str(tmp_path / "cohorts"))
    monkeypatch.setenv("CLINICAL_MLOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "extract.csv").write_text("stay_id,age,sex,died\n1,70,F,0\n2,81,M,1\n")
    return tmp_path


def test_the_well_formed_project_is_accepted(project, capsys):
    assert cli.main(["sources", "--json"]) == 0
    assert '"source": "ward"' in capsys.readouterr().out


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_contract_or_cohort_is_one_line_and_lands_nothing(project, capsys, case):
    folder, name, text, expected = CASES[case]
    (project / folder / name).write_text(text)
    for command in (["land", str(project / "extract.csv"), "--source", "ward"], ["run"], ["sources"]):
        assert cli.main(command) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("error: ")
        assert expected in err.replace(str(project) + "/", ""), err
    assert not (project / "data").exists()
