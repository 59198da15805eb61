"""The like-for-like bare script does the candidate's work: the same cohort rows, the same patient split
and a test AUROC within 0.005 of the product's candidate, run by the product's own step functions on the
same extracts (synthetic here; the real UCI release where ../shared has it)."""

from __future__ import annotations

import contextlib
import json

import pytest

from clinical_mlops.bench import bare
from clinical_mlops_tests.conftest import UCI_ZIP, requires_real_data

AUROC_TOLERANCE = 0.005


def _product(workspace, source: str, extracts) -> dict:
    """land → validate → features → split → candidate, through the steps the assets call."""
    from clinical_mlops.core import warehouse
    from clinical_mlops.features import steps as feature_steps
    from clinical_mlops.features.cohort import load_cohort
    from clinical_mlops.ingestion import deid, steps as ingestion_steps
    from clinical_mlops.sources.contract import load_source
    from clinical_mlops.training import steps as training_steps
    from clinical_mlops.validation import steps as validation_steps

    contract, spec = load_source(source), load_cohort(f"{source}_readmission_30d")
    key, _ = deid.pseudonym_key_from_env()

    def connect():
        return contextlib.closing(warehouse.connect(workspace.warehouse))

    for path in extracts:
        with connect() as con:
            landed = ingestion_steps.land(con, path, contract)
        with connect() as con:
            validation_steps.validate(con, contract, landed.extract_id, pseudonym_key=key)
    with connect() as con:
        built = feature_steps.build_features(con, spec)
    with connect() as con:
        split = training_steps.split(con, spec).summary
    with connect() as con:
        candidate = training_steps.train_candidate(con, spec, tracking_uri=workspace.tracking_uri,
                                                   artifact_root=workspace.artifacts)
    return {"rows": built.build.rows_out, "positives": built.build.positives, "train_rows": split.train_rows,
            "test_rows": split.test_rows, "test_auroc": candidate.test_auroc}


def _compare(workspace, source: str, extracts) -> None:
    ours = bare.run(extracts, source)
    product = _product(workspace, source, extracts)
    for count in ("rows", "positives", "train_rows", "test_rows"):
        assert ours[count] == product[count], count
    assert ours["test_auroc"] == pytest.approx(product["test_auroc"], abs=AUROC_TOLERANCE)


def test_bare_script_matches_the_candidate_on_synthetic_extracts(workspace):
    from clinical_mlops.ingestion import synthetic, uci

    encounters = synthetic.generate_encounters(synthetic.SyntheticConfig(n_encounters=6_000, seed=11))
    extracts = uci.write_sequential_extracts(encounters, workspace.landing, 2, prefix="bare")
    _compare(workspace, "synthetic_diabetes130", extracts)


def test_bare_script_matches_the_candidate_on_the_real_extract(workspace):
    requires_real_data()
    from clinical_mlops.ingestion import uci

    landing = workspace.landing_root / "diabetes130"
    landing.mkdir(parents=True)
    extracts = uci.write_sequential_extracts(uci.load_uci_encounters(UCI_ZIP), landing, 2, prefix="uci")
    _compare(workspace, "diabetes130", extracts)


def test_bare_script_result_holds_counts_and_figures_only(tmp_path):
    from clinical_mlops.ingestion import synthetic, uci

    encounters = synthetic.generate_encounters(synthetic.SyntheticConfig(n_encounters=1_500, seed=3))
    extracts = uci.write_sequential_extracts(encounters, tmp_path, 1, prefix="bare")
    result = tmp_path / "bare.json"
    assert bare.main(["--result", str(result), *map(str, extracts)]) == 0
    assert set(json.loads(result.read_text())) == {"rows", "train_rows", "test_rows", "positives", "test_auroc",
                                                   "seconds_by_phase"}
