"""Tests for the synthetic Diabetes 130 encounter generator (whole file runs in well under 30 s)."""

from __future__ import annotations

import re
from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency

from clinical_mlops.ingestion import diabetes130 as d130
from clinical_mlops.ingestion.synthetic import (
    PopulationShift,
    SubgroupBias,
    SyntheticConfig,
    generate_encounters,
    write_synthetic_csv,
)

N = 20_000
AGE_INDEX = {band: i for i, band in enumerate(d130.AGE_BANDS)}


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    return generate_encounters(SyntheticConfig(n_encounters=N, seed=42))


@pytest.fixture(scope="module")
def base_sorted(base: pd.DataFrame) -> pd.DataFrame:
    frame = base.assign(_enc=base["encounter_id"].astype(np.int64))
    return frame.sort_values("_enc", kind="stable")


def _lt30(frame: pd.DataFrame) -> pd.Series:
    return frame["readmitted"] == "<30"


# --- schema -----------------------------------------------------------------------------------


def test_schema_columns_and_string_values(base: pd.DataFrame) -> None:
    assert list(base.columns) == list(d130.COLUMNS)
    assert len(base) == N
    assert all(dtype == object for dtype in base.dtypes)
    for column in base.columns:
        assert base[column].map(type).eq(str).all(), column
    assert base.index.equals(pd.RangeIndex(N))


def test_vocabularies_and_missing_markers(base: pd.DataFrame) -> None:
    for column, vocabulary in d130.CATEGORICAL_VOCABULARIES.items():
        allowed = set(vocabulary) | ({d130.MISSING} if column in d130.NULLABLE_COLUMNS else set())
        unexpected = set(base[column].unique()) - allowed
        assert not unexpected, (column, unexpected)
    for column in d130.COLUMNS:
        if column not in d130.NULLABLE_COLUMNS:
            assert not base[column].eq(d130.MISSING).any(), column


def test_counts_and_identifiers_are_integers_in_range(base: pd.DataFrame) -> None:
    for column, (low, high) in d130.COUNT_COLUMNS.items():
        assert base[column].str.fullmatch(r"0|[1-9]\d*").all(), column
        values = base[column].astype(np.int64)
        assert values.between(low, high).all(), column
    for column in (d130.ENCOUNTER_ID, d130.PATIENT_ID):
        assert base[column].str.fullmatch(r"[1-9]\d*").all(), column


def test_icd9_codes_match_pattern_and_look_realistic(base: pd.DataFrame) -> None:
    pattern = re.compile(d130.ICD9_PATTERN)
    codes = pd.concat([base[c] for c in ("diag_1", "diag_2", "diag_3")])
    present = codes[codes != d130.MISSING]
    assert present.map(lambda code: bool(pattern.match(code))).all()
    assert present.nunique() > 200
    assert present.str.startswith("V").any() and present.str.startswith("E").any()
    assert present.str.contains(r"\.").any()  # e.g. 250.83
    assert not present.str.match(r"0\d").any()  # no zero padding
    top_primary = base["diag_1"].value_counts().index[:5]
    assert {"428", "414"} & set(top_primary)


def test_missing_and_not_measured_rates(base: pd.DataFrame) -> None:
    def rate(column: str, value: str = d130.MISSING) -> float:
        return float(base[column].eq(value).mean())

    assert rate("weight") == pytest.approx(0.969, abs=0.01)
    assert rate("medical_specialty") == pytest.approx(0.491, abs=0.02)
    assert rate("payer_code") == pytest.approx(0.396, abs=0.02)
    assert rate("race") == pytest.approx(0.022, abs=0.006)
    assert rate("diag_3") == pytest.approx(0.014, abs=0.005)
    assert rate("diag_2") == pytest.approx(0.0035, abs=0.0025)
    assert rate("diag_1") < 0.002
    assert rate("max_glu_serum", d130.NOT_MEASURED) == pytest.approx(0.947, abs=0.015)
    assert rate("A1Cresult", d130.NOT_MEASURED) == pytest.approx(0.833, abs=0.02)
    assert rate("gender", "Unknown/Invalid") < 0.001


# --- determinism and file format --------------------------------------------------------------


def test_same_config_gives_byte_identical_csv(tmp_path: Path) -> None:
    config = SyntheticConfig(
        n_encounters=3_000,
        seed=7,
        shift=PopulationShift(0.3),
        bias=SubgroupBias(label_flip_rate=0.2, measurement_missing_rate=0.1),
    )
    first = write_synthetic_csv(config, tmp_path / "a.csv")
    second = write_synthetic_csv(config, tmp_path / "nested" / "b.csv")
    assert first == tmp_path / "a.csv"
    raw = first.read_bytes()
    assert raw == second.read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")
    assert raw.split(b"\n", 1)[0].decode() == ",".join(d130.COLUMNS)
    reread = pd.read_csv(first, dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(reread, generate_encounters(config))


def test_different_seed_gives_different_output(tmp_path: Path) -> None:
    a = write_synthetic_csv(SyntheticConfig(n_encounters=2_000, seed=1), tmp_path / "a.csv")
    b = write_synthetic_csv(SyntheticConfig(n_encounters=2_000, seed=2), tmp_path / "b.csv")
    assert a.read_bytes() != b.read_bytes()


def test_small_and_empty_sizes() -> None:
    assert generate_encounters(SyntheticConfig(n_encounters=0)).columns.tolist() == list(d130.COLUMNS)
    for n in (1, 17):
        assert len(generate_encounters(SyntheticConfig(n_encounters=n))) == n


def test_configs_are_frozen_and_validated() -> None:
    with pytest.raises(FrozenInstanceError):
        SyntheticConfig().seed = 1  # type: ignore[misc]
    with pytest.raises(ValueError):
        PopulationShift(strength=1.5)
    with pytest.raises(ValueError):
        SubgroupBias(attribute="payer_code")
    with pytest.raises(ValueError):
        SubgroupBias(attribute="gender", group="AfricanAmerican")
    with pytest.raises(ValueError):
        SubgroupBias(label_flip_rate=-0.1)


# --- encounters and patients ------------------------------------------------------------------


def test_encounter_ids_increase_with_row_order(base: pd.DataFrame) -> None:
    ids = base["encounter_id"].astype(np.int64).to_numpy()
    assert ids[0] == 12_522
    assert (np.diff(ids) > 0).all()
    shifted = generate_encounters(SyntheticConfig(n_encounters=100, first_encounter_id=5_000_000))
    assert shifted["encounter_id"].iloc[0] == "5000000"


def test_repeat_patients_with_constant_demographics(base_sorted: pd.DataFrame) -> None:
    patients = base_sorted.groupby(d130.PATIENT_ID, sort=False)
    assert base_sorted[d130.PATIENT_ID].nunique() / len(base_sorted) == pytest.approx(0.703, abs=0.04)
    sizes = patients.size()
    assert (sizes == 1).mean() == pytest.approx(0.765, abs=0.04)
    assert sizes.max() >= 6
    assert (patients["race"].nunique() == 1).all()
    assert (patients["gender"].nunique() == 1).all()
    age = base_sorted["age"].map(AGE_INDEX)
    assert (age.groupby(base_sorted[d130.PATIENT_ID], sort=False).diff().dropna() >= 0).all()


def test_death_or_hospice_ends_the_history(base_sorted: pd.DataFrame) -> None:
    disposition = base_sorted["discharge_disposition_id"].astype(np.int64)
    final = disposition.isin(d130.DEATH_OR_HOSPICE_DISPOSITIONS)
    assert final.mean() == pytest.approx(0.024, abs=0.007)  # 11 alone ~1.6%, as in the release
    assert (disposition == 11).mean() == pytest.approx(0.016, abs=0.005)
    assert base_sorted.loc[final, "readmitted"].eq("NO").all()
    last_id = base_sorted.groupby(d130.PATIENT_ID)["_enc"].max()
    ended = base_sorted.loc[final, [d130.PATIENT_ID, "_enc"]]
    assert (ended["_enc"].to_numpy() == last_id.loc[ended[d130.PATIENT_ID]].to_numpy()).all()


# --- marginals and dependencies ---------------------------------------------------------------


def test_marginals_close_to_the_release(base: pd.DataFrame) -> None:
    readmitted = base["readmitted"].value_counts(normalize=True)
    assert readmitted["NO"] == pytest.approx(0.539, abs=0.03)
    assert readmitted[">30"] == pytest.approx(0.349, abs=0.03)
    assert readmitted["<30"] == pytest.approx(0.112, abs=0.015)
    race = base["race"].value_counts(normalize=True)
    assert race["Caucasian"] == pytest.approx(0.748, abs=0.02)
    assert race["AfricanAmerican"] == pytest.approx(0.189, abs=0.02)
    assert base["gender"].eq("Female").mean() == pytest.approx(0.538, abs=0.02)
    age = base["age"].value_counts(normalize=True)
    assert age.index[0] == "[70-80)"
    assert age["[60-70)"] == pytest.approx(0.221, abs=0.02)
    assert base["admission_type_id"].eq("1").mean() == pytest.approx(0.531, abs=0.02)
    assert base["admission_source_id"].eq("7").mean() == pytest.approx(0.565, abs=0.02)
    assert base["discharge_disposition_id"].eq("1").mean() == pytest.approx(0.592, abs=0.03)
    assert base["insulin"].eq("No").mean() == pytest.approx(0.466, abs=0.03)
    assert base["diabetesMed"].eq("Yes").mean() == pytest.approx(0.770, abs=0.03)
    assert base["change"].eq("Ch").mean() == pytest.approx(0.462, abs=0.03)
    means = {c: base[c].astype(np.int64).mean() for c in d130.COUNT_COLUMNS}
    assert means["time_in_hospital"] == pytest.approx(4.40, abs=0.25)
    assert means["num_lab_procedures"] == pytest.approx(43.1, abs=2.0)
    assert means["num_procedures"] == pytest.approx(1.34, abs=0.15)
    assert means["num_medications"] == pytest.approx(16.0, abs=1.0)
    assert means["number_inpatient"] == pytest.approx(0.64, abs=0.1)
    assert means["number_emergency"] == pytest.approx(0.20, abs=0.06)
    assert means["number_outpatient"] == pytest.approx(0.37, abs=0.1)
    assert means["number_diagnoses"] == pytest.approx(7.42, abs=0.25)


def test_outcome_and_length_of_stay_depend_on_the_columns(base: pd.DataFrame) -> None:
    lt30 = _lt30(base)
    inpatient = base["number_inpatient"].astype(np.int64)
    assert lt30[inpatient >= 2].mean() > 1.8 * lt30[inpatient == 0].mean()
    emergency = base["number_emergency"].astype(np.int64)
    assert lt30[emergency >= 1].mean() > 1.3 * lt30[emergency == 0].mean()
    rehab = base["discharge_disposition_id"] == "22"
    home = base["discharge_disposition_id"] == "1"
    assert lt30[rehab].mean() > 1.8 * lt30[home].mean()
    counts = base[list(d130.COUNT_COLUMNS)].astype(np.int64)
    rho = counts.corr(method="spearman")["time_in_hospital"]
    assert rho["num_medications"] > 0.35
    assert rho["num_lab_procedures"] > 0.25
    assert rho["number_diagnoses"] > 0.1


# --- knobs ------------------------------------------------------------------------------------


def test_population_shift_moves_marginals(base: pd.DataFrame) -> None:
    shifted = generate_encounters(SyntheticConfig(n_encounters=N, seed=42, shift=PopulationShift(1.0)))
    mild = generate_encounters(SyntheticConfig(n_encounters=N, seed=42, shift=PopulationShift(0.3)))

    def summary(frame: pd.DataFrame) -> dict[str, float]:
        return {
            "old": float(frame["age"].map(AGE_INDEX).ge(7).mean()),
            "inpatient": float(frame["number_inpatient"].astype(np.int64).mean()),
            "medications": float(frame["num_medications"].astype(np.int64).mean()),
            "a1c_tested": float(frame["A1Cresult"].ne(d130.NOT_MEASURED).mean()),
            "african_american": float(frame["race"].eq("AfricanAmerican").mean()),
        }

    s0, s3, s1 = summary(base), summary(mild), summary(shifted)
    assert s1["old"] > s0["old"] + 0.15
    assert s1["inpatient"] > s0["inpatient"] + 0.25
    assert s1["medications"] > s0["medications"] + 2.0
    assert s1["a1c_tested"] > s0["a1c_tested"] + 0.1
    assert abs(s1["african_american"] - s0["african_american"]) > 0.1
    for key in s0:
        assert min(s0[key], s1[key]) <= s3[key] <= max(s0[key], s1[key]), key
    # A drift test on age detects the shift, even the mild one.
    for other in (mild, shifted):
        table = pd.crosstab(
            np.r_[np.zeros(N), np.ones(N)], pd.concat([base["age"], other["age"]]).to_numpy()
        )
        assert chi2_contingency(table)[1] < 1e-6
    unshifted = generate_encounters(SyntheticConfig(n_encounters=N, seed=42, shift=PopulationShift(0.0)))
    pd.testing.assert_frame_equal(unshifted, base)


def test_subgroup_bias_only_touches_the_named_group(base: pd.DataFrame) -> None:
    bias = SubgroupBias(attribute="race", group="AfricanAmerican", label_flip_rate=0.5,
                        measurement_missing_rate=0.6)
    biased = generate_encounters(SyntheticConfig(n_encounters=N, seed=42, bias=bias))
    in_group = base["race"] == "AfricanAmerican"
    pd.testing.assert_frame_equal(biased[~in_group], base[~in_group])
    assert _lt30(biased[in_group]).mean() == pytest.approx(0.5 * _lt30(base[in_group]).mean(), rel=0.2)
    flipped = _lt30(base) & ~_lt30(biased)
    assert biased.loc[flipped, "readmitted"].eq("NO").all() and flipped[~in_group].sum() == 0
    measured_before = base.loc[in_group, "A1Cresult"].ne(d130.NOT_MEASURED).mean()
    measured_after = biased.loc[in_group, "A1Cresult"].ne(d130.NOT_MEASURED).mean()
    assert measured_after == pytest.approx(0.4 * measured_before, rel=0.25)
    assert biased.loc[in_group, "max_glu_serum"].ne(d130.NOT_MEASURED).mean() < (
        base.loc[in_group, "max_glu_serum"].ne(d130.NOT_MEASURED).mean()
    )
    unchanged = [c for c in d130.COLUMNS if c not in ("readmitted", "A1Cresult", "max_glu_serum")]
    pd.testing.assert_frame_equal(biased[unchanged], base[unchanged])


@pytest.mark.parametrize(("attribute", "group"), [("gender", "Male"), ("age", "[70-80)")])
def test_subgroup_bias_on_other_attributes(base: pd.DataFrame, attribute: str, group: str) -> None:
    bias = SubgroupBias(attribute=attribute, group=group, label_flip_rate=1.0)
    biased = generate_encounters(SyntheticConfig(n_encounters=N, seed=42, bias=bias))
    in_group = base[attribute] == group
    assert not _lt30(biased[in_group]).any()
    pd.testing.assert_series_equal(biased.loc[~in_group, "readmitted"], base.loc[~in_group, "readmitted"])


# --- learnability -----------------------------------------------------------------------------

_MODEL_CATEGORICALS = (
    "race", "gender", "age", "admission_type_id", "discharge_disposition_id", "admission_source_id",
    "payer_code", "medical_specialty", "max_glu_serum", "A1Cresult", "metformin", "glipizide",
    "glyburide", "pioglitazone", "rosiglitazone", "insulin", "change", "diabetesMed",
    "diag_1", "diag_2", "diag_3",
)


def test_readmission_is_learnable_but_not_leaky(base: pd.DataFrame) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupShuffleSplit
    from threadpoolctl import threadpool_limits

    features = base[list(d130.COUNT_COLUMNS)].astype(np.int64)
    for column in _MODEL_CATEGORICALS:
        values = base[column]
        features[column] = values.str.split(".").str[0] if column.startswith("diag_") else values
    y = _lt30(base).to_numpy()
    train, test = next(
        GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=0).split(features, y, base[d130.PATIENT_ID])
    )
    assert not set(base[d130.PATIENT_ID].iloc[train]) & set(base[d130.PATIENT_ID].iloc[test])
    x_train, x_test = features.iloc[train].copy(), features.iloc[test].copy()
    for column in _MODEL_CATEGORICALS:
        categories = x_train[column].value_counts().index[:60]
        x_train[column] = pd.Categorical(x_train[column], categories=categories)
        x_test[column] = pd.Categorical(x_test[column], categories=categories)
    model = HistGradientBoostingClassifier(
        max_iter=300, learning_rate=0.05, categorical_features="from_dtype", early_stopping=False,
        random_state=0,
    )
    with threadpool_limits(1):  # small data: threads only add overhead
        model.fit(x_train, y[train])
    auroc = roc_auc_score(y[test], model.predict_proba(x_test)[:, 1])
    assert 0.62 <= auroc <= 0.75, auroc

    # Second use case: a long stay (>= 7 days) is predictable from the other count columns.
    long_stay = base["time_in_hospital"].astype(np.int64).ge(7).to_numpy()
    others = features[[c for c in d130.COUNT_COLUMNS if c != "time_in_hospital"]]
    stay_model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=0)
    with threadpool_limits(1):
        stay_model.fit(others.iloc[train], long_stay[train])
    stay_auroc = roc_auc_score(long_stay[test], stay_model.predict_proba(others.iloc[test])[:, 1])
    assert stay_auroc > 0.72, stay_auroc


# --- the calibration data file ------------------------------------------------------------------

# sha256 of write_synthetic_csv / write_synthetic_extracts output, computed with the generator as it
# was before its calibration tables moved from literals in synthetic.py to calibration.json
# (main at cf1fce4). Moving or reshaping the tables must never change a generated byte.
_GOLDEN_CSV = {
    "seed42": "e57d852cab39277f2f6943341a0f0eba160e1f235a580e94c0370fb19cbd8953",
    "seed7_shift_bias": "54a22d447631fbfa71a400af7dae7de48cafbc1f9cb9143aaf4deeaa708f7253",
}
_GOLDEN_EXTRACTS = [
    "a209a20a9d2a03862c5cabad4a2d746e46604cacca00a8031126515154708482",
    "15c7233f1b15aa9b51fed15c31dce7a4bd73252844099e664069fc05c03e784a",
    "1a243bb1b90daf85d57ff8e25d360b8d4b400dd4d41e4befbf4a3d4d3e3923a2",
]


def test_output_is_byte_identical_to_the_generator_before_the_data_file(tmp_path: Path) -> None:
    import hashlib

    from clinical_mlops.ingestion.synthetic import write_synthetic_extracts

    configs = {
        "seed42": SyntheticConfig(n_encounters=5_000, seed=42),
        "seed7_shift_bias": SyntheticConfig(
            n_encounters=3_000, seed=7, shift=PopulationShift(0.3),
            bias=SubgroupBias(label_flip_rate=0.2, measurement_missing_rate=0.1, utilisation_undercount_rate=0.3),
        ),
    }
    for name, config in configs.items():
        digest = hashlib.sha256(write_synthetic_csv(config, tmp_path / f"{name}.csv").read_bytes()).hexdigest()
        assert digest == _GOLDEN_CSV[name], name
    paths = write_synthetic_extracts(
        SyntheticConfig(n_encounters=7_000, seed=5, shift=PopulationShift(0.5)), tmp_path / "extracts",
        rows_per_extract=3_000, chunk_rows=1_200,
    )
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths] == _GOLDEN_EXTRACTS


def test_calibration_is_a_data_file_of_the_package_aligned_with_the_vocabularies() -> None:
    import json
    from importlib import resources

    source = resources.files("clinical_mlops.ingestion.synthetic").joinpath("calibration.json")
    calibration = json.loads(source.read_text(encoding="utf-8"))
    demographics = calibration["demographics"]
    assert len(demographics["race_weights"]) == len(demographics["race_shift"]) == len(d130.RACES) + 1
    assert len(demographics["gender_weights"]) == len(d130.GENDERS)
    assert len(demographics["age_weights"]) == len(calibration["readmission"]["age"]) == len(d130.AGE_BANDS)
    assert len(demographics["weight_weights"]) == len(d130.WEIGHT_BANDS)
    assert all(len(row) == len(d130.PAYER_CODES) + 1 for row in calibration["payer"]["by_age"])
    admission = calibration["admission"]
    assert all(len(row) == len(admission["sources"]) for row in admission["source_by_type"])
    assert len(admission["source_by_type"]) == len(admission["type_weights"]) == len(admission["glucose_tested_by_type"])
    discharge = calibration["discharge"]
    ids = [int(k) for k in (*discharge["dispositions"], *discharge["death_or_hospice"])]
    assert len(set(ids)) == len(ids) and set(ids) <= set(d130.DISCHARGE_DISPOSITION_IDS)
    assert set(discharge["death_or_hospice"]) == {str(i) for i in d130.DEATH_OR_HOSPICE_DISPOSITIONS}
    assert set(calibration["medications"]["counts"]) == set(d130.MEDICATIONS) - {"insulin"}
    specialty = calibration["specialty"]
    assert set(specialty["counts"]) <= set(d130.MEDICAL_SPECIALTIES)
    groups = calibration["primary_diagnosis_groups"]
    assert set(specialty["favoured_by_group"]) == set(groups["names"])
    for favoured in specialty["favoured_by_group"].values():
        assert set(favoured) <= set(d130.MEDICAL_SPECIALTIES)
    pattern = re.compile(d130.ICD9_PATTERN)
    assert len(calibration["icd9"]["counts"]) == 300
    assert all(pattern.match(code) and len(n) == 3 for code, n in calibration["icd9"]["counts"].items())
