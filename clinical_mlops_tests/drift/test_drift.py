"""Drift statistics: exact against scipy, detect a known shift, and stay quiet on resamples."""

from __future__ import annotations

import dataclasses

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clinical_mlops.ingestion import diabetes130, synthetic
from clinical_mlops.drift import statistics as drift, report as drift_report
from clinical_mlops.features import build as features
from clinical_mlops.core import multiple_testing, warehouse
from clinical_mlops.features.cohort import load_cohort
from clinical_mlops_tests.conftest import synthetic_source  # noqa: E402
from clinical_mlops_tests.helpers import land_and_validate

SYNTHETIC_SOURCE = synthetic_source()

SETTINGS = drift.DriftSettings()
RAW_NUMERIC = list(diabetes130.COUNT_COLUMNS)
RAW_CATEGORICAL = ["race", "gender", "age", "admission_type_id", "A1Cresult", "max_glu_serum", "insulin",
                   "metformin", "payer_code", "medical_specialty", "change", "diabetesMed"]


def _counts(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    values, inverse = np.unique(np.concatenate([x, y]), return_inverse=True)
    return (values, np.bincount(inverse[: x.size], minlength=values.size),
            np.bincount(inverse[x.size:], minlength=values.size))


# ---------------------------------------------------------------------------------------------
# the statistics against scipy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift,discrete", [(0.0, True), (0.2, True), (0.0, False), (0.1, False)])
def test_ks_from_counts_equals_scipy(shift, discrete):
    rng = np.random.default_rng(3)
    if discrete:
        x, y = rng.poisson(3.0, 4000), rng.poisson(3.0 + shift, 2500)
    else:
        x, y = rng.normal(0, 1, 4000), rng.normal(shift, 1, 2500)
    _, a, b = _counts(x, y)
    d, p = drift.ks_from_counts(a, b)
    expected = stats.ks_2samp(x, y, method="asymp")
    assert d == pytest.approx(expected.statistic, abs=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-15)


def test_chi_square_equals_scipy_and_pools_rare_categories():
    a, b = np.array([500, 300, 200]), np.array([260, 140, 100])
    statistic, p, keep = drift.chi_square_from_counts(a, b)
    expected = stats.chi2_contingency(np.vstack([a, b]), correction=False)
    assert (statistic, p) == pytest.approx((expected.statistic, expected.pvalue))
    assert keep.all()
    # two categories too rare for the approximation are pooled into one column
    statistic, p, keep = drift.chi_square_from_counts(np.array([500, 300, 2, 1]), np.array([260, 140, 3, 0]))
    pooled = stats.chi2_contingency(np.array([[500, 300, 3], [260, 140, 3]]), correction=False)
    assert keep.tolist() == [True, True, False, False]
    assert (statistic, p) == pytest.approx((pooled.statistic, pooled.pvalue))


def test_p_value_corrections():
    p = np.array([0.01, 0.04, 0.03, 0.5, np.nan, 0.002])
    valid = ~np.isnan(p)
    bh = drift.adjust_p_values(p, "benjamini_hochberg")
    assert np.isnan(bh[4])
    np.testing.assert_allclose(bh[valid], stats.false_discovery_control(p[valid], method="bh"))
    holm = drift.adjust_p_values(p, "holm")
    np.testing.assert_allclose(holm[valid], [0.04, 0.09, 0.09, 0.5, 0.01])  # step-down, monotone
    np.testing.assert_allclose(drift.adjust_p_values(p, "bonferroni")[valid], np.minimum(p[valid] * 5, 1))
    np.testing.assert_allclose(drift.adjust_p_values(p, "none")[valid], p[valid])
    with pytest.raises(ValueError, match="unknown"):
        drift.adjust_p_values(p, "sidak")


def test_drift_corrects_with_the_one_shared_correction():
    """Drift and fairness adjust p-values in one place; each feature's adjusted p is that function's, per policy."""
    assert drift.adjust_p_values is multiple_testing.adjust_p_values
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"a": rng.poisson(3.0, 800), "b": rng.poisson(5.0, 800), "c": rng.choice(list("xyz"), 800)})
    current = pd.DataFrame({"a": rng.poisson(3.3, 600), "b": rng.poisson(5.0, 600), "c": rng.choice(list("xyzz"), 600)})
    con = duckdb.connect()
    con.register("reference_rows", reference)
    con.register("current_rows", current)
    drift.stage_populations(con, "SELECT * FROM reference_rows", "SELECT * FROM current_rows", ["a", "b", "c"])
    for method in ("benjamini_hochberg", "holm", "bonferroni", "none"):
        result = drift.compare(con, numeric=["a", "b"], categorical=["c"],
                               settings=dataclasses.replace(SETTINGS, correction=method))
        raw = [f.p_value for f in result.features]
        np.testing.assert_array_equal([f.p_value_adjusted for f in result.features],
                                      multiple_testing.adjust_p_values(raw, method))
        assert [f.significant for f in result.features] == [f.p_value_adjusted < SETTINGS.alpha for f in result.features]


def test_psi():
    assert drift.psi_from_counts(np.array([10, 20, 70]), np.array([1, 2, 7])) == pytest.approx(0.0)
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    assert drift.psi_from_counts(p * 1000, q * 1000) == pytest.approx(float(np.sum((q - p) * np.log(q / p))))
    # an empty cell is floored, not infinite
    assert np.isfinite(drift.psi_from_counts(np.array([50, 50]), np.array([100, 0])))
    # numeric PSI bins at the reference deciles: a location shift of one SD is material
    rng = np.random.default_rng(0)
    values, a, b = _counts(rng.normal(0, 1, 5000).round(2), rng.normal(1, 1, 5000).round(2))
    assert drift.numeric_psi(values, a, b) > 0.5


def test_score_drift_reports_alert_rates():
    rng = np.random.default_rng(1)
    reference, current = rng.beta(2, 8, 3000), rng.beta(3, 6, 3000)
    result, (before, after) = drift.score_drift(reference, current, threshold=0.3, settings=SETTINGS)
    assert result.drifted and result.kind == "prediction"
    assert before == pytest.approx((reference >= 0.3).mean()) and after > before
    stable, _ = drift.score_drift(reference, rng.beta(2, 8, 3000), threshold=0.3, settings=SETTINGS)
    assert not stable.drifted


# ---------------------------------------------------------------------------------------------
# behaviour on synthetic populations
# ---------------------------------------------------------------------------------------------


def _raw_frame(seed: int, n: int, strength: float) -> pd.DataFrame:
    frame = synthetic.generate_encounters(synthetic.SyntheticConfig(
        n_encounters=n, seed=seed, shift=synthetic.PopulationShift(strength=strength)))
    for column in RAW_NUMERIC:
        frame[column] = frame[column].astype(int)
    return frame[["patient_nbr", "encounter_id", *RAW_NUMERIC, *RAW_CATEGORICAL]]


def _raw_drift(con, reference: pd.DataFrame, current: pd.DataFrame) -> drift.DriftResult:
    con.register("reference_frame", reference)
    con.register("current_frame", current)
    drift.stage_populations(con, "SELECT * FROM reference_frame", "SELECT * FROM current_frame",
                            [*RAW_NUMERIC, *RAW_CATEGORICAL], unit="patient_nbr", order_key="encounter_id")
    return drift.compare(con, numeric=RAW_NUMERIC, categorical=RAW_CATEGORICAL, settings=SETTINGS)


def test_resamples_of_one_population_are_not_flagged():
    """A controlled false-positive rate: 20 independent resamples of the same distribution.

    With Benjamini–Hochberg at alpha = 0.05 under the global null, the chance that a resample
    flags any feature is at most 0.05 (about 1 in 20 seeds); the dataset never drifts.
    """
    import duckdb

    con = duckdb.connect()
    flagged, significant_raw, tested = 0, 0, 0
    for seed in range(20):
        result = _raw_drift(con, _raw_frame(100 + seed, 3000, 0.0), _raw_frame(5000 + seed, 3000, 0.0))
        assert not result.dataset_drift
        flagged += bool(result.drifted_features)
        significant_raw += sum(f.p_value < SETTINGS.alpha for f in result.features)
        tested += result.features_tested
    assert flagged <= 3, f"{flagged}/20 resamples flagged a feature"
    assert significant_raw / tested <= 0.08, "uncorrected per-feature rate stays near alpha"


@pytest.mark.parametrize("strength", [0.0, 1.0])
def test_known_population_shift_is_detected(strength):
    import duckdb

    con = duckdb.connect()
    result = _raw_drift(con, _raw_frame(1, 6000, 0.0), _raw_frame(2, 3000, strength))
    if strength == 0.0:
        assert not result.dataset_drift and not result.drifted_features
        return
    assert result.dataset_drift
    # the generator's shift moves age, prior utilisation, medication counts, race mix and A1c testing
    assert {"age", "race", "A1Cresult", "num_medications", "number_inpatient"} <= set(result.drifted_features)
    assert {"age", "race"} <= set(result.material_features)
    age = next(f for f in result.features if f.name == "age")
    assert age.test == "chi_square" and age.p_value_adjusted < 1e-6 and age.psi > SETTINGS.psi_threshold
    # drift is significance after correction; materiality (PSI) is reported, not a hidden switch
    assert not hasattr(SETTINGS, "require_material")
    assert {"age", "race"} <= set(result.material_features) & set(result.drifted_features) < set(result.drifted_features)


def test_drift_on_cohort_features_is_stored_as_a_time_series(tmp_path):
    spec = load_cohort("synthetic_diabetes130_readmission_30d")
    con = warehouse.connect(tmp_path / "w.duckdb")
    base = synthetic.generate_encounters(synthetic.SyntheticConfig(n_encounters=5000, seed=11))
    shifted = synthetic.generate_encounters(synthetic.SyntheticConfig(
        n_encounters=2500, seed=12, shift=synthetic.PopulationShift(strength=1.0), first_encounter_id=50_000_000))
    reference_id = land_and_validate(con, base, tmp_path / "month_001.csv")
    current_id = land_and_validate(con, shifted, tmp_path / "month_002.csv")
    features.build_features(con, spec)

    monitored = [*spec.categorical_features, *spec.sensitive_attributes]
    for _ in range(2):
        drift.stage_populations(
            con, *[f"SELECT * FROM {spec.features_table} WHERE extract_id = ?"] * 2,
            [*spec.numeric_features, *monitored, "label"], reference_params=[reference_id],
            current_params=[current_id], unit="patient_key", order_key="encounter_id")
        result = drift.compare(con, numeric=spec.numeric_features, categorical=monitored, settings=SETTINGS,
                               label="label")
        run_id = drift.store(con, result, cohort=spec.name, extract_id=current_id, policy_sha256="p" * 64,
                             reference=drift.Reference("explicit", None, None, (reference_id,)))
    assert result.dataset_drift
    assert {"age_years_mid", "race", "age_band", "a1c_result"} <= set(result.drifted_features)
    assert result.target is not None and result.target.kind == "target"
    assert (result.n_reference, result.n_current) == tuple(
        con.execute(f"SELECT count(*) FILTER (WHERE extract_id = ?), count(*) FILTER (WHERE extract_id = ?) "
                    f"FROM {spec.features_table}", [reference_id, current_id]).fetchall()[0])
    assert result.features[0].n_reference < result.n_reference, "tests count one encounter per patient"

    runs = drift.latest_runs(con, spec.name)
    assert [(r["extract_id"], r["drift_run_id"]) for r in runs] == [(current_id, run_id)]
    assert runs[0]["dataset_drift"] and runs[0]["policy_sha256"] == "p" * 64
    stored = con.execute(
        "SELECT count(DISTINCT drift_run_id), count(*) FILTER (WHERE kind = 'target') FROM monitoring.drift_metrics"
    ).fetchall()[0]
    assert stored == (2, 2)
    columns = {c for (c,) in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'monitoring'").fetchall()}
    assert not columns & {"encounter_id", "patient_key", "patient_nbr"}, "aggregates only"
    top = drift.top_drifted(con, run_id, 3)
    assert len(top) == 3 and all(t["drifted"] for t in top)


def test_report_sample_is_reproducible_and_holds_only_monitored_columns():
    """The Evidently HTML itself is rendered in test_drift_assets (importing Evidently takes ~10 s)."""
    import duckdb

    con = duckdb.connect()
    reference, current = _raw_frame(1, 1500, 0.0), _raw_frame(2, 1200, 1.0)
    columns = ["num_medications", "number_inpatient", "race", "age"]
    con.register("r", reference)
    con.register("c", current)
    drift.stage_populations(con, "SELECT * FROM r", "SELECT * FROM c", columns, unit="patient_nbr",
                            order_key="encounter_id")
    first = drift_report.sampled_frames(con, drift.STAGE_TABLE, columns, sample_rows=400, seed=17)
    again = drift_report.sampled_frames(con, drift.STAGE_TABLE, columns, sample_rows=400, seed=17)
    other = drift_report.sampled_frames(con, drift.STAGE_TABLE, columns, sample_rows=400, seed=18)
    assert first.sampled and (len(first.reference), len(first.current)) == (400, 400)
    assert (first.reference_total, first.current_total) == (1500, 1200)
    pd.testing.assert_frame_equal(first.reference, again.reference)
    assert not first.reference.equals(other.reference)
    assert list(first.reference.columns) == columns, "no identifier reaches Evidently"
    whole = drift_report.sampled_frames(con, drift.STAGE_TABLE, columns, sample_rows=5000, seed=17)
    assert not whole.sampled and len(whole.reference) == 1500


def test_scores_in_chunks_equal_scores_of_the_whole_frame():
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT i AS encounter_id, i % 7 AS x, CAST(i % 3 AS VARCHAR) AS c "
                "FROM range(5000) r(i)")
    sql = "SELECT * FROM t WHERE encounter_id >= ? ORDER BY encounter_id"

    def predict(frame):
        return frame["x"].to_numpy() / 10 + (frame["c"] == "1").to_numpy()

    whole = predict(con.execute(sql, [10]).df())
    for chunk_rows in (1, 333, 2048, 10**6):
        np.testing.assert_array_equal(drift.scores_in_chunks(con, sql, [10], predict, chunk_rows=chunk_rows), whole)
