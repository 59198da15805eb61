"""End to end on the real UCI Diabetes 130 extract (skipped when ../shared is absent)."""

from __future__ import annotations

import dagster as dg
import pytest

from clinical_mlops.ingestion import uci
from clinical_mlops.core import warehouse
from clinical_mlops.definitions import defs as load_defs
from clinical_mlops_tests.conftest import UCI_ZIP, requires_real_data

pytestmark = [pytest.mark.e2e, pytest.mark.real_data]

SOURCE = "diabetes130"
"""The real release's own source (not the synthetic one: real rows never land beside synthetic rows)."""
COHORT = f"{SOURCE}_readmission_30d"


def _source_assets(defs) -> list:
    """The real source's assets and its cohorts' (one source's extract partitions per run)."""
    return [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)
            and all(k.path[0] == SOURCE or k.path[0].startswith(f"{SOURCE}_") for k in a.keys)]


def test_real_extract_reconciles_and_gives_a_plausible_auroc(workspace):
    requires_real_data()
    defs = load_defs()
    assets = _source_assets(defs)
    assert {"diabetes130/raw_extract", "diabetes130/validated_extract", f"{COHORT}/model_evaluation"} <= {
        k.to_user_string() for a in assets for k in a.keys}
    encounters = uci.load_uci_encounters(UCI_ZIP)
    paths = uci.write_sequential_extracts(encounters, workspace.landing_root / SOURCE, 2, prefix="uci")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(f"{SOURCE}_extracts", [p.name for p in paths])
    landed = valid = quarantined = 0
    for path in paths:
        result = dg.materialize(
            assets, selection=dg.AssetSelection.groups("ingestion", "validation"),
            partition_key=path.name, instance=instance, resources=workspace.resources(),
        )
        assert all(c.passed for c in result.get_asset_check_evaluations())
        meta = result.asset_materializations_for_node(f"{SOURCE}__validated_extract")[0].metadata
        landed += meta["rows_landed"].value
        valid += meta["rows_valid"].value
        quarantined += meta["rows_quarantined"].value
    assert landed == len(encounters) == 101_766
    assert valid + quarantined == landed

    result = dg.materialize(
        assets, selection=dg.AssetSelection.key_prefixes([COHORT])
        & dg.AssetSelection.groups("features", "training", "evaluation"),
        instance=instance, resources=workspace.resources(),
        run_config=dg.RunConfig(ops={f"{COHORT}__model_evaluation": {"config": {"n_bootstrap": 100}}}),
    )
    assert result.success
    features = result.asset_materializations_for_node(f"{COHORT}__encounter_features")[0].metadata
    ended_in_death_or_hospice = encounters["discharge_disposition_id"].isin(["11", "13", "14", "19", "20", "21"]).sum()
    assert quarantined == 0
    assert features["rows_excluded"].value == {"died_or_hospice": int(ended_in_death_or_hospice)}
    assert features["rows_out"].value == landed - ended_in_death_or_hospice
    evaluation = result.asset_materializations_for_node(f"{COHORT}__model_evaluation")[0].metadata
    auroc = evaluation["candidate_auroc"].value
    assert 0.62 <= auroc <= 0.75, f"candidate AUROC {auroc} is outside the plausible range (leakage above 0.75)"
    assert 0.60 <= evaluation["baseline_auroc"].value <= 0.75
    with warehouse.connect(workspace.warehouse) as con:
        overlap = con.execute(
            """SELECT count(*) FROM (SELECT patient_key FROM ml.splits WHERE cohort = ?
               GROUP BY patient_key HAVING count(DISTINCT split) > 1)""", [COHORT]
        ).fetchone()[0]
        sources = con.execute("SELECT DISTINCT source FROM raw.extracts").fetchall()
        rows = con.execute(f'SELECT count(*) FROM raw."{SOURCE}"').fetchone()[0]
    assert overlap == 0
    assert sources == [(SOURCE,)] and rows == landed
