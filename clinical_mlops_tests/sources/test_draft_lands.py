"""``source init`` round-trips through the real landing and validation: on each shipped file, the draft contract
lands that file with 0 quarantined rows and no identifier alarm."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from clinical_mlops.core import warehouse
from clinical_mlops.ingestion import landing
from clinical_mlops.sources.contract import load_contract_file
from clinical_mlops.sources.draft import draft_contract
from clinical_mlops.validation import rules as validation
from clinical_mlops_tests.conftest import SEPSIS_DATA, UCI_ZIP

SEPSIS_FILES = sorted(SEPSIS_DATA.glob("*.csv"))


def _land_with_draft(path: Path, name: str, root: Path) -> tuple[landing.LandingResult, validation.ValidationOutcome]:
    draft = draft_contract(path, name)
    (root / "sources").mkdir(exist_ok=True)
    contract_file = root / "sources" / f"{name}.yaml"
    contract_file.write_text(draft.yaml_text)
    source = load_contract_file(contract_file)
    with warehouse.connect(root / "warehouse.duckdb") as con:
        landed = landing.land_extract(con, path, source)
        assert landed.status == "landed", landing.describe_findings(landed.findings)
        return landed, validation.validate_extract(con, source, landed.extract_id, pseudonym_key=b"draft-test")


def _assert_clean(landed: landing.LandingResult, outcome: validation.ValidationOutcome, rows: int) -> None:
    assert landed.findings == ()
    assert (landed.rows_landed, outcome.rows_valid, outcome.rows_quarantined) == (rows, rows, 0), outcome.failures
    assert outcome.reconciles


def test_a_synthetic_extract_lands_clean_under_its_draft(tmp_path, small_encounters):
    path = tmp_path / "synthetic.csv"
    small_encounters.to_csv(path, index=False, lineterminator="\n")
    _assert_clean(*_land_with_draft(path, "my_synthetic", tmp_path), rows=len(small_encounters))


@pytest.mark.parametrize("index", range(3))
def test_each_sepsis_file_lands_clean_under_its_draft(tmp_path, index):
    if len(SEPSIS_FILES) != 3:
        pytest.skip("the sepsis survival files are not at ../shared/data/sepsis_survival")
    path = SEPSIS_FILES[index]
    rows = sum(1 for _ in path.open()) - 1
    _assert_clean(*_land_with_draft(path, "my_sepsis", tmp_path), rows=rows)


def test_the_uci_release_lands_clean_under_its_draft(tmp_path):
    if not UCI_ZIP.exists():
        pytest.skip("the UCI extract is not at ../shared/data/diabetes130")
    with zipfile.ZipFile(UCI_ZIP) as archive:
        member = next(n for n in archive.namelist() if n.endswith("diabetic_data.csv"))
        path = Path(archive.extract(member, tmp_path / "uci"))
    _assert_clean(*_land_with_draft(path, "my_diabetes", tmp_path), rows=101_766)
