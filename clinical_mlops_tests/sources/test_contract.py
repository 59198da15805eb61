"""Source contract files: the shipped ones load and say what the code does; broken ones fail in one line."""

from __future__ import annotations

import hashlib
import re

import pytest
import yaml

from clinical_mlops.core.settings import PROJECT_ROOT
from clinical_mlops.features.cohort import load_cohort
from clinical_mlops.governance.policy import for_cohort, load_policy
from clinical_mlops.ingestion import diabetes130, landing
from clinical_mlops.sources import contract

SHIPPED = PROJECT_ROOT / "sources"


def test_sources_dir_is_the_project_folder_unless_overridden(monkeypatch, tmp_path):
    monkeypatch.delenv(contract.SOURCES_DIR_ENV, raising=False)
    assert contract.sources_dir() == SHIPPED
    monkeypatch.setenv(contract.SOURCES_DIR_ENV, str(tmp_path))
    assert contract.sources_dir() == tmp_path


def test_every_shipped_contract_loads_with_the_sha256_of_its_bytes(monkeypatch):
    monkeypatch.delenv(contract.SOURCES_DIR_ENV, raising=False)
    sources = contract.load_all_sources()
    assert set(sources) == {"diabetes130", "synthetic_diabetes130", "sepsis_survival"}
    for name, source in sources.items():
        assert source.path == SHIPPED / f"{name}.yaml"
        # a contract 'same_as' another is versioned by its own bytes followed by the other's
        base = yaml.safe_load(source.path.read_text()).get("same_as")
        covered = source.path.read_bytes() + ((SHIPPED / f"{base}.yaml").read_bytes() if base else b"")
        assert source.sha256 == hashlib.sha256(covered).hexdigest()
        assert contract.load_source(name) == source
    assert yaml.safe_load((SHIPPED / "synthetic_diabetes130.yaml").read_text())["same_as"] == "diabetes130"


def test_synthetic_diabetes130_is_diabetes130_under_its_own_name():
    real = contract.load_source("diabetes130", SHIPPED).contract
    synthetic = contract.load_source("synthetic_diabetes130", SHIPPED).contract
    own = {"name", "description", "provenance", "licence", "extracts", "notes"}
    assert synthetic.name == "synthetic_diabetes130"
    assert synthetic.model_dump(exclude=own) == real.model_dump(exclude=own)
    assert synthetic.extracts == []


def test_an_unknown_source_lists_the_known_ones():
    with pytest.raises(contract.ContractError, match=r"no source named 'nope' \(sources: diabetes130, sepsis_survival, synthetic_diabetes130\)"):
        contract.load_source("nope", SHIPPED)


def test_diabetes130_contract_is_the_format_the_code_validates_today():
    c = contract.load_source("diabetes130", SHIPPED).contract
    assert tuple(c.columns) == diabetes130.COLUMNS
    assert c.missing_tokens == [diabetes130.MISSING]
    assert {n for n, col in c.columns.items() if col.nullable} == diabetes130.NULLABLE_COLUMNS
    for name, vocabulary in diabetes130.CATEGORICAL_VOCABULARIES.items():
        assert set(c.columns[name].vocabulary()) == set(vocabulary), name
    assert c.columns["A1Cresult"].not_measured == c.columns["max_glu_serum"].not_measured == diabetes130.NOT_MEASURED
    for name, (low, high) in diabetes130.COUNT_COLUMNS.items():
        assert (c.columns[name].range.min, c.columns[name].range.max) == (low, high)
    assert {c.columns[f"diag_{i}"].pattern.regex for i in (1, 2, 3)} == {diabetes130.ICD9_PATTERN}
    assert (c.roles.encounter_id, c.roles.patient_id, c.roles.outcomes) == (
        diabetes130.ENCOUNTER_ID, diabetes130.PATIENT_ID, [diabetes130.TARGET_COLUMN])
    assert c.key.columns == [diabetes130.ENCOUNTER_ID]
    exemptions = {e.column: set(e.kinds) for e in c.identifier_scan_exemptions}
    assert exemptions == {diabetes130.ENCOUNTER_ID: set(landing.ID_SHAPED_KINDS),
                          diabetes130.PATIENT_ID: set(landing.ID_SHAPED_KINDS)}


def test_the_shipped_policy_declares_no_attributes_and_for_cohort_gives_the_contracts(monkeypatch):
    monkeypatch.delenv(contract.SOURCES_DIR_ENV, raising=False)
    text = yaml.safe_load((PROJECT_ROOT / "governance" / "policy.yaml").read_text())["fairness"]
    assert "sensitive_attributes" not in text and "intersections" not in text
    policy = load_policy()
    assert policy.fairness.sensitive_attributes == () and policy.fairness.intersections == ()
    for cohort in ("diabetes130_readmission_30d", "synthetic_diabetes130_readmission_30d", "sepsis_mortality"):
        spec = load_cohort(cohort)
        c = contract.load_source(spec.source, SHIPPED).contract
        applied = for_cohort(policy, spec)
        assert for_cohort(applied, spec) == applied  # idempotent
        assert applied.sha256 == policy.sha256 and applied.fairness.metrics == policy.fairness.metrics
        attributes = {a.name: a for a in applied.fairness.sensitive_attributes}
        assert list(attributes) == list(c.sensitive_attributes), cohort
        for name, declared in c.sensitive_attributes.items():
            attribute = attributes[name]
            assert attribute.reference == declared.reference
            assert list(attribute.required_groups) == declared.required_groups
            assert {g: float(f) for g, f in attribute.reference_population.items()} == (
                declared.reference_population or {})
        assert [list(i) for i in applied.fairness.intersections] == c.intersections
    # what governance/policy.yaml declared before the attributes moved into the contract
    diabetes = contract.load_source("diabetes130", SHIPPED).contract
    moved = {"race": ("Caucasian", ["AfricanAmerican"], {"Caucasian": 0.75, "AfricanAmerican": 0.19, "Hispanic": 0.02,
                                                          "Other": 0.015, "Asian": 0.006, "Unknown": 0.02}),
             "gender": ("Female", [], None), "age_band": ("[70-80)", [], None)}
    assert {n: (a.reference, a.required_groups, a.reference_population)
            for n, a in diabetes.sensitive_attributes.items()} == moved
    assert diabetes.intersections == [["race", "gender"]]


def test_sepsis_contract_has_no_ids_no_key_and_its_cohorts_related():
    c = contract.load_source("sepsis_survival", SHIPPED).contract
    assert (c.roles.encounter_id, c.roles.patient_id, c.key) == (None, None, None)
    assert c.roles.outcomes == ["hospital_outcome_1alive_0dead"]
    roles = {e.role: e for e in c.extracts}
    assert set(roles) == {"primary", "subset", "external_site"}
    assert roles["subset"].subset_of == roles["primary"].file
    assert roles["external_site"].site != roles["primary"].site
    assert c.attribute_groups("sex") == ("male", "female")
    assert c.attribute_groups("age_band") == ("[0-18)", "[18-40)", "[40-60)", "[60-80)", "[80-101)")


# --------------------------------------------------------------------------------------------
# Malformed contracts: one line naming the file and the field
# --------------------------------------------------------------------------------------------


def _edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


SEPSIS = (SHIPPED / "sepsis_survival.yaml").read_text()
DIABETES = (SHIPPED / "diabetes130.yaml").read_text()

MALFORMED = {
    "unknown_type": (
        "sepsis_survival", SEPSIS, "  age_years:\n    type: integer", "  age_years:\n    type: int64",
        r"columns\.age_years\.type: unknown type 'int64' \(expected one of boolean, category, integer, number, string\)"),
    "vocabulary_not_a_list": (
        "diabetes130", DIABETES, 'allowed_values: ["Female", "Male", "Unknown/Invalid"]', 'allowed_values: "Female"',
        r"columns\.gender\.allowed_values: must be a list of values, got a string"),
    "unquoted_yaml_boolean_in_vocabulary": (
        "diabetes130", DIABETES, 'allowed_values: ["NO", ">30", "<30"]', 'allowed_values: [NO, ">30", "<30"]',
        r"columns\.readmitted\.allowed_values\.0: expected a string for a category column, got a boolean \(quote it in YAML\)"),
    "sensitive_attribute_not_a_column": (
        "sepsis_survival", SEPSIS, "    column: sex_0male_1female\n", "    column: sex\n",
        r"sensitive_attributes\.sex\.column: 'sex' is not a column of the contract"),
    "sensitive_attribute_defaulting_to_a_missing_column": (
        "diabetes130", DIABETES, "  age_band:\n    column: age\n", "  age_band:\n",
        r"sensitive_attributes\.age_band\.column \(defaults to the attribute's name\): 'age_band' is not a column"),
    "missing_role_column": (
        "diabetes130", DIABETES, "  patient_id: patient_nbr", "  patient_id: patient_number",
        r"roles\.patient_id: 'patient_number' is not a column of the contract"),
    "missing_outcome_column": (
        "sepsis_survival", SEPSIS, "  outcomes: [hospital_outcome_1alive_0dead]", "  outcomes: [died]",
        r"roles\.outcomes\.0: 'died' is not a column of the contract"),
    "unknown_key": (
        "sepsis_survival", SEPSIS, "licence: CC BY 4.0", "licence: CC BY 4.0\nlicense: CC BY 4.0",
        r"license: unknown key"),
    "unknown_column_key": (
        "sepsis_survival", SEPSIS, "    range: {min: 0, max: 100}", "    range: {min: 0, max: 100}\n    unit: years",
        r"columns\.age_years\.unit: unknown key"),
    "reference_not_a_group": (
        "sepsis_survival", SEPSIS, "    reference: male", "    reference: men",
        r"sensitive_attributes\.sex\.reference: 'men' is not a group of sex \(groups: male, female\)"),
    "unknown_identifier_kind": (
        "diabetes130", DIABETES, "    kinds: [zip5]\n    reason: >-\n      A declared encounter",
        "    kinds: [zip]\n    reason: >-\n      A declared encounter",
        r"identifier_scan_exemptions\.0\.kinds: unknown identifier kind\(s\) 'zip'"),
    "exemption_without_reason": (
        "diabetes130", DIABETES,
        "    reason: >-\n      A declared patient number, pseudonymised before staging: its 5- to 9-digit codes read as\n"
        "      ZIP codes by shape alone. Still scanned for every other kind.\n", "",
        r"identifier_scan_exemptions\.1\.reason: required key missing"),
    "key_not_a_column": (
        "diabetes130", DIABETES, "  columns: [encounter_id]", "  columns: [encounter]",
        r"key\.columns\.0: 'encounter' is not a column of the contract"),
    "category_without_values": (
        "diabetes130", DIABETES, '    allowed_values: ["Caucasian", "AfricanAmerican", "Hispanic", "Other", "Asian"]\n', "",
        r"columns\.race\.allowed_values: a category column needs its list of allowed values"),
    "name_not_the_file": (
        "sepsis_survival", SEPSIS, "name: sepsis_survival", "name: sepsis",
        r"name: 'sepsis' does not match the file name 'sepsis_survival'"),
    "duplicated_yaml_key": (
        "sepsis_survival", SEPSIS, "  episode_number:\n", "  age_years:\n",
        r"line \d+: invalid YAML: key 'age_years' appears twice in one mapping"),
    "not_yaml": (
        "sepsis_survival", SEPSIS, "name: sepsis_survival", "name: [sepsis_survival",
        r"line \d+: invalid YAML: "),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_contract_fails_in_one_line_naming_file_and_field(case, tmp_path):
    name, text, old, new, expected = MALFORMED[case]
    path = tmp_path / f"{name}.yaml"
    path.write_text(_edit(text, old, new))
    with pytest.raises(contract.ContractError) as error:
        contract.load_contract_file(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    assert re.search(expected, message), message


def test_a_malformed_contract_in_the_folder_stops_load_all(tmp_path, monkeypatch):
    (tmp_path / "sepsis_survival.yaml").write_text(SEPSIS.replace("type: integer", "type: int", 1))
    monkeypatch.setenv(contract.SOURCES_DIR_ENV, str(tmp_path))
    with pytest.raises(contract.ContractError, match=r"sepsis_survival\.yaml: columns\.age_years\.type: unknown type"):
        contract.load_all_sources()


def test_a_shipped_file_is_shown_relative_to_the_project(tmp_path):
    with pytest.raises(contract.ContractError, match=r"^sources/x\.yaml: no source named 'x'"):
        contract.load_source("x", SHIPPED)
