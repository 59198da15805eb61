"""Sources never mix: two sources in one warehouse, with colliding encounter and patient ids, keep their own
raw and staging tables, partitions and ids; each cohort trains, is evaluated and audited on its own rows only."""

from __future__ import annotations

import json

import duckdb
from threadpoolctl import threadpool_limits

from clinical_mlops.core import warehouse
from clinical_mlops.features import build as features
from clinical_mlops.features.cohort import load_all_cohorts
from clinical_mlops.ingestion import landing, synthetic
from clinical_mlops.sources.contract import load_source
from clinical_mlops.training import fit as training, modelling
from clinical_mlops.validation import rules as validation

KEY = b"isolation-test-key"


def _in_cohort(con: duckdb.DuckDBPyConnection, spec) -> int:
    return int(con.execute(f"SELECT count(*) FROM ({features.cohort_rows_sql(spec)}) WHERE NOT "
                           f"({' OR '.join(e.sql for e in spec.exclusions) or 'FALSE'})").fetchone()[0])


def test_two_sources_with_colliding_ids_never_mix(workspace):
    synthetic_rows = synthetic.generate_encounters(synthetic.SyntheticConfig(n_encounters=2_400, seed=3))
    other_rows = synthetic.generate_encounters(synthetic.SyntheticConfig(n_encounters=1_800, seed=4))
    assert set(synthetic_rows["encounter_id"]) & set(other_rows["encounter_id"])  # the ids collide across sources
    files = {"synthetic_diabetes130": workspace.root / "a.csv", "diabetes130": workspace.root / "b.csv"}
    synthetic_rows.to_csv(files["synthetic_diabetes130"], index=False, lineterminator="\n")
    other_rows.to_csv(files["diabetes130"], index=False, lineterminator="\n")
    specs = {s.name: s for s in load_all_cohorts()}
    with warehouse.connect(workspace.warehouse) as con:
        for name, path in files.items():
            source = load_source(name)
            landed = landing.land_extract(con, path, source, extract_id="month_000.csv")  # the same extract id
            outcome = validation.validate_extract(con, source, landed.extract_id, pseudonym_key=KEY)
            assert (outcome.rows_valid, outcome.rows_quarantined) == (landed.rows_landed, 0)
        assert con.execute("SELECT source, count(*) FROM raw.extracts GROUP BY 1 ORDER BY 1").fetchall() == [
            ("diabetes130", 1), ("synthetic_diabetes130", 1)]
        counts = {}
        with threadpool_limits(limits=1):
            for name in ("synthetic_diabetes130_readmission_30d", "diabetes130_readmission_30d"):
                spec = specs[name]
                features.build_features(con, spec)
                features.assign_split(con, spec)
                params = modelling.GradientBoostingParams(max_iter=10, seed=7)
                outcome = training.train_and_register(
                    con, spec, role="candidate", pipeline=modelling.build_gradient_boosting(spec, params),
                    params=params.as_dict(), tracking_uri=workspace.tracking_uri, artifact_root=workspace.artifacts)
                counts[name] = (outcome.train_rows + outcome.test_rows, _in_cohort(con, spec))
        rows = con.execute("SELECT model_name, source, input_extracts_json FROM ml.model_versions ORDER BY 1").fetchall()
        staged = {name: con.execute(f'SELECT count(*) FROM staging."{name}"').fetchone()[0] for name in files}
    assert staged == {"synthetic_diabetes130": len(synthetic_rows), "diabetes130": len(other_rows)}
    for name, (trained, in_cohort) in counts.items():
        assert trained == in_cohort  # exactly the cohort's own source rows
    assert counts["synthetic_diabetes130_readmission_30d"][0] <= len(synthetic_rows)
    assert counts["diabetes130_readmission_30d"][0] <= len(other_rows)
    by_model = {name: (source, json.loads(inputs)) for name, source, inputs in rows}
    sha = {name: landing.file_sha256(path) for name, path in files.items()}
    assert by_model["diabetes130_readmission_30d_candidate"] == (
        "diabetes130", [{"extract_id": "month_000.csv", "sha256": sha["diabetes130"]}])
    assert by_model["synthetic_diabetes130_readmission_30d_candidate"] == (
        "synthetic_diabetes130", [{"extract_id": "month_000.csv", "sha256": sha["synthetic_diabetes130"]}])


def test_a_warehouse_in_the_layout_before_sources_gets_one_clear_error(tmp_path, capsys, monkeypatch):
    from clinical_mlops.cli import main as cli

    path = tmp_path / "data" / "warehouse.duckdb"
    path.parent.mkdir()
    with duckdb.connect(str(path)) as old:
        old.execute("CREATE SCHEMA raw")
        old.execute("CREATE TABLE raw.encounters (_extract_id VARCHAR, encounter_id VARCHAR)")
    monkeypatch.setenv("CLINICAL_MLOPS_DATA_DIR", str(tmp_path / "data"))
    try:
        warehouse.connect(path)
    except warehouse.LegacyWarehouseError as error:
        assert "layout before sources" in str(error) and "land your extracts again" in str(error)
    else:
        raise AssertionError("the old layout was accepted")
    assert cli.main(["sources"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "make clean" in err
    with duckdb.connect(str(path), read_only=True) as old:  # nothing changed in it
        assert old.execute("SELECT count(*) FROM information_schema.tables").fetchone()[0] == 1


def test_the_contract_version_is_part_of_every_asset_code_version(tmp_path, monkeypatch):
    import shutil

    from clinical_mlops.core.settings import PROJECT_ROOT
    from clinical_mlops.definitions import defs as load_defs


    def code_versions() -> dict[str, str]:
        graph = load_defs().resolve_asset_graph()
        return {key.to_user_string(): graph.get(key).code_version for key in graph.get_all_asset_keys()
                if key.path[0].startswith(("synthetic_diabetes130", "diabetes130")) and graph.get(key).is_materializable}

    shutil.copytree(PROJECT_ROOT / "sources", tmp_path / "sources")
    monkeypatch.setenv("CLINICAL_MLOPS_SOURCES_DIR", str(tmp_path / "sources"))
    before = code_versions()
    synthetic_file = tmp_path / "sources" / "synthetic_diabetes130.yaml"
    synthetic_file.write_text(synthetic_file.read_text() + "  - A reviewed change of the synthetic contract.\n")
    after = code_versions()
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {k for k in before if k.startswith("synthetic_diabetes130")}
