"""One contract, two renderings: the Pandera schema and the SQL rules flag the same rows for the same rules.

The diabetes130 contract is checked against the bad-extract corpus exactly as
``test_bad_extract_corpus.py`` lands it, and against the pipeline's quarantine
(``validation.rules.validate_extract``): on every case that lands, both renderings of the contract
quarantine the rows the pipeline quarantines, for the same reasons. The sepsis contract passes the three real files.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from clinical_mlops.core import warehouse
from clinical_mlops.core.settings import PROJECT_ROOT
from clinical_mlops.ingestion import deid, diabetes130, landing
from clinical_mlops.sources import contract, derive
from clinical_mlops.validation import rules as validation
from clinical_mlops_tests.ingestion import bad_extracts as corpus
from clinical_mlops_tests.conftest import synthetic_source  # noqa: E402

SYNTHETIC_SOURCE = synthetic_source()

KEY = b"sources-test-key"
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SEPSIS_DIR = SHARED_DATA / "sepsis_survival"

DIABETES = contract.load_source("diabetes130", PROJECT_ROOT / "sources").contract
SEPSIS = contract.load_source("sepsis_survival", PROJECT_ROOT / "sources").contract


def _sql_failures(con: duckdb.DuckDBPyConnection, c: contract.SourceContract, table: str, row: str,
                  where: str = "") -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for number, rule in con.execute(derive.failing_rows_sql(c, table, row, where=where)).fetchall():
        found.setdefault(int(number), set()).add(rule)
    return found


def _pandera_failures(frame: pd.DataFrame, c: contract.SourceContract) -> dict[int, set[str]]:
    return {int(k): v for k, v in derive.pandera_failures(frame, derive.pandera_schema(c)).items()}


def _frame_failures_both_ways(frame: pd.DataFrame, c: contract.SourceContract) -> tuple[dict, dict]:
    """Pandera on the frame, SQL on the same frame registered as an all-VARCHAR table."""
    with contextlib.closing(duckdb.connect()) as con:
        staged = frame.reset_index(names="_row")
        con.register("frame_view", staged)
        columns = ", ".join(f'CAST("{c_}" AS VARCHAR) AS "{c_}"' for c_ in frame.columns)
        con.execute(f"CREATE TABLE raw_rows AS SELECT _row, {columns} FROM frame_view")
        sql = _sql_failures(con, c, "raw_rows", "_row")
    return _pandera_failures(frame, c), sql


def test_rules_have_names_and_reasons_and_one_value_rule_per_column():
    found = derive.rules(DIABETES)
    assert len({r.name for r in found}) == len(found)
    assert all(r.reason and r.name == f"{r.column}:{r.check}" for r in found)
    per_row = [r for r in found if not r.cross_row]
    assert len(per_row) == 2 * len(diabetes130.COLUMNS)  # not_nullable and one value rule each
    assert [r.name for r in found if r.cross_row] == ["encounter_id:duplicate_encounter_id"]
    assert {r.check for r in found if r.column == "time_in_hospital"} == {"not_nullable", "integer_in_1_14"}
    assert [r.name for r in derive.rules(SEPSIS) if r.cross_row] == []  # identical rows are legitimate


def test_the_pipelines_quarantine_reasons_on_the_corpus_are_the_contract_rule_names(tmp_path):
    """Every reason ``validate_extract`` records on the bad-extract corpus is a rule of the contract,
    each quarantined case is quarantined for the rule the corpus names, and the clean variants for none."""
    names = {r.name for r in derive.rules(DIABETES)}
    assert names == {r.name for r in derive.rules(SYNTHETIC_SOURCE.contract)}  # same_as: the same rules
    seen: dict[str, set[str]] = {}
    for case in corpus.CASES:
        if case.outcome not in (corpus.QUARANTINED, corpus.LANDED):
            continue
        path = tmp_path / f"{case.name}.csv"
        path.write_bytes(case.file_bytes())
        # each case alone in its warehouse, as the corpus test lands it (the cases share encounter ids)
        with contextlib.closing(warehouse.connect(tmp_path / f"{case.name}.duckdb")) as con:
            if landing.land_extract(con, path, SYNTHETIC_SOURCE).status != "landed":
                continue
            validation.validate_extract(con, SYNTHETIC_SOURCE, path.name, pseudonym_key=KEY)
            seen[case.name] = {reason for (reasons,) in con.execute(
                "SELECT reasons FROM staging.synthetic_diabetes130__quarantine WHERE extract_id = ?",
                [path.name]).fetchall() for reason in reasons.split("; ")}
    assert len(seen) >= 25
    recorded = set().union(*seen.values())
    assert recorded and recorded <= names, recorded - names
    for case in corpus.CASES:
        if case.name in seen:
            assert (case.expect in seen[case.name]) if case.outcome == corpus.QUARANTINED else not seen[case.name], case.name


# --------------------------------------------------------------------------------------------
# The bad-extract corpus, landed as the corpus test lands it
# --------------------------------------------------------------------------------------------


def _landing_cases() -> list:
    return [pytest.param(case, id=case.name) for case in corpus.CASES
            if case.outcome in (corpus.QUARANTINED, corpus.LANDED)]


@pytest.mark.parametrize("case", _landing_cases())
def test_corpus_case_both_renderings_agree_with_each_other_and_with_today(case, tmp_path):
    path = tmp_path / f"{case.name}.csv"
    path.write_bytes(case.file_bytes())
    with contextlib.closing(warehouse.connect(tmp_path / "warehouse.duckdb")) as con:
        result = landing.land_extract(con, path, SYNTHETIC_SOURCE)
        if result.status != "landed":
            pytest.skip(f"{case.name} does not land today ({result.status})")
        outcome = validation.validate_extract(con, SYNTHETIC_SOURCE, path.name, pseudonym_key=KEY)
        today = {int(n): set(r.split("; ")) for n, r in con.execute(
            "SELECT row_number, reasons FROM staging.synthetic_diabetes130__quarantine WHERE extract_id = ?", [path.name]).fetchall()}
        sql = _sql_failures(con, DIABETES, "raw.synthetic_diabetes130", "_row_number",
                            where=f"_extract_id = '{path.name}'")
        columns = ", ".join(f'"{c}"' for c in diabetes130.COLUMNS)
        frame = con.execute(f"SELECT _row_number, {columns} FROM raw.synthetic_diabetes130 WHERE _extract_id = ? "
                            "ORDER BY _row_number", [path.name]).df().set_index("_row_number")
    frame.index.name = None
    pandera = _pandera_failures(frame, DIABETES)
    assert sql == pandera
    assert pandera == today
    assert len(today) == outcome.rows_quarantined == (case.quarantined if case.outcome == corpus.QUARANTINED else 0)


def test_every_landing_case_of_the_corpus_is_covered():
    assert len(_landing_cases()) >= 25


# --------------------------------------------------------------------------------------------
# Synthetic rows and hand-made bad rows
# --------------------------------------------------------------------------------------------


def test_three_thousand_synthetic_rows_all_pass_both(small_encounters):
    assert len(small_encounters) == 3_000
    assert _frame_failures_both_ways(small_encounters, DIABETES) == ({}, {})


BAD_ROWS = {
    # row: (column, value, rule it must fail)
    0: ("age", "?", "age:in_vocabulary"),                        # missing where not nullable
    1: ("race", "?", None),                                      # missing where nullable: passes
    2: ("A1Cresult", "None", None),                              # not measured: a value
    3: ("max_glu_serum", "none", "max_glu_serum:in_vocabulary"),
    4: ("num_procedures", "-1", "num_procedures:integer_in_0_10"),
    5: ("num_lab_procedures", " 41", "num_lab_procedures:integer_in_1_200"),
    6: ("diag_2", "250.831", "diag_2:icd9_code"),
    7: ("diag_3", "?", None),
    8: ("patient_nbr", "0123", "patient_nbr:positive_integer"),
    9: ("readmitted", None, "readmitted:not_nullable"),
    10: ("admission_type_id", "9", "admission_type_id:in_vocabulary"),
    11: ("encounter_id", "__copy_of_row_12__", "encounter_id:duplicate_encounter_id"),
}


def test_hand_made_bad_rows_fail_exactly_their_rule_in_both(small_encounters):
    frame = small_encounters.head(20).copy().reset_index(drop=True)
    expected: dict[int, set[str]] = {}
    for row, (column, value, rule) in BAD_ROWS.items():
        frame.loc[row, column] = frame.loc[12, "encounter_id"] if value == "__copy_of_row_12__" else value
        if rule:
            expected[row] = {rule}
    expected[12] = {"encounter_id:duplicate_encounter_id"}
    pandera, sql = _frame_failures_both_ways(frame, DIABETES)
    assert pandera == sql == expected


def test_a_missing_or_extra_column_is_a_whole_frame_failure(small_encounters):
    schema = derive.pandera_schema(DIABETES)
    with pytest.raises(ValueError, match="fails the contract as a whole: .*num_medications"):
        derive.pandera_failures(small_encounters.head(5).drop(columns="num_medications"), schema)


# --------------------------------------------------------------------------------------------
# Sepsis: the three real files
# --------------------------------------------------------------------------------------------


def _sepsis_files() -> list[Path]:
    return [SEPSIS_DIR / e.file for e in SEPSIS.extracts]


@pytest.mark.parametrize("index", range(3), ids=["primary", "study", "validation"])
def test_sepsis_contract_passes_each_real_file_in_both(index):
    path = _sepsis_files()[index]
    if not path.is_file():
        pytest.skip(f"the shared sepsis data is absent ({path.parent})")
    extract = SEPSIS.extracts[index]
    assert extract.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(frame.columns) == list(SEPSIS.columns) and len(frame) == extract.rows
    assert _pandera_failures(frame, SEPSIS) == {}
    with contextlib.closing(duckdb.connect()) as con:
        names = ", ".join(f"'{c}': 'VARCHAR'" for c in SEPSIS.columns)
        escaped = str(path).replace("'", "''")
        con.execute(f"CREATE TABLE raw_rows AS SELECT row_number() OVER () AS _row, * FROM read_csv('{escaped}', "
                    f"header = true, auto_detect = false, columns = {{{names}}}, delim = ',')")
        assert con.execute("SELECT count(*) FROM raw_rows").fetchone()[0] == extract.rows
        assert _sql_failures(con, SEPSIS, "raw_rows", "_row") == {}
        # no exemption declared, and the identifier scan has nothing to say (names or values)
        assert deid.scan_column_names(SEPSIS.columns) == []
        vocabularies = {n: col.vocabulary() for n, col in SEPSIS.columns.items() if col.vocabulary()}
        assert deid.scan_table_values(con, "raw_rows", columns=list(SEPSIS.columns), vocabularies=vocabularies) == []


def test_sepsis_rules_catch_what_the_files_never_hold():
    frame = pd.DataFrame({"age_years": ["101", "40", "40", "7"], "sex_0male_1female": ["1", "2", "0", "1"],
                          "episode_number": ["1", "1", "0", "1"], "hospital_outcome_1alive_0dead": ["1", "1", "1", "1"]})
    expected = {0: {"age_years:integer_in_0_100"}, 1: {"sex_0male_1female:in_vocabulary"},
                2: {"episode_number:integer_in_1_5"}}
    pandera, sql = _frame_failures_both_ways(frame, SEPSIS)
    assert pandera == sql == expected
