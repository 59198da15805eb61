"""The validated tables show their columns in the Dagster UI, built from the Pandera schemas."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest

from clinical_mlops.defs import _schemas
from clinical_mlops.features import build as features
from clinical_mlops.features.cohort import load_all_cohorts
from clinical_mlops.ingestion import diabetes130
from clinical_mlops.sources import derive, tables
from clinical_mlops.sources.contract import load_all_sources
from clinical_mlops_tests.conftest import SYNTHETIC


@pytest.fixture(scope="module")
def asset_graph():
    from clinical_mlops.definitions import defs

    return defs().resolve_asset_graph()


def _schema(asset_graph, key: dg.AssetKey) -> dg.TableSchema:
    value = asset_graph.get(key).metadata[_schemas.COLUMN_SCHEMA]
    return getattr(value, "schema", value)


def _staging_table(source) -> list[tuple[str, str, str]]:
    """``staging.<source>`` as the pipeline creates it: (column, type, is_nullable) in order."""
    con = duckdb.connect()
    for schema in ("raw", "staging"):
        con.execute(f"CREATE SCHEMA {schema}")
    tables.ensure_source_tables(con, source)
    return con.execute("SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                       "WHERE table_schema = 'staging' AND table_name = ? ORDER BY ordinal_position",
                       [source.name]).fetchall()


@pytest.mark.parametrize("name", sorted(load_all_sources()))
def test_validated_extract_shows_the_staging_table_with_the_contracts_checks(asset_graph, name):
    source = load_all_sources()[name]
    contract = source.contract
    schema = _schema(asset_graph, dg.AssetKey([name, "validated_extract"]))
    table = _staging_table(source)
    # the staging table's columns and types, in order
    assert [(c.name, c.type) for c in schema.columns] == [(n, t) for n, t, _ in table]
    columns = {c.name: c for c in schema.columns}
    # what the table declares NOT NULL the UI shows so; beyond that, nullability is the contract's
    # (validation enforces it: a non-nullable column of a staged row is never NULL)
    assert all(not columns[n].constraints.nullable for n, _, nullable in table if nullable == "NO")
    patient = contract.roles.patient_id
    for column in columns.values():
        declared = patient if column.name == "patient_key" and patient else column.name
        if declared in contract.columns:
            assert column.constraints.nullable == contract.columns[declared].nullable, column.name
    rules = derive.rules(contract)
    if patient is not None:
        assert patient not in columns, "the raw patient number is not a column of the validated table"
        assert "pseudonym" in columns["patient_key"].description.lower()
    for rule in rules:
        if rule.kind in ("not_null", "unique"):
            continue
        shown = columns["patient_key" if rule.column == patient else rule.column]
        assert rule.name in shown.constraints.other, f"{rule.column} shows its {rule.check} check"
    unique = {c.name for c in schema.columns if c.constraints.unique}
    key = contract.key
    assert unique == ({key.columns[0]} if key is not None and key.scope == "source" and len(key.columns) == 1
                      else set())


def test_the_synthetic_validated_extract_is_diabetes130s(asset_graph):
    schema = _schema(asset_graph, dg.AssetKey([SYNTHETIC, "validated_extract"]))
    columns = {c.name: c for c in schema.columns}
    assert diabetes130.PATIENT_ID not in columns
    assert not columns["patient_key"].constraints.nullable, "patient_nbr passed not_nullable"
    assert columns[diabetes130.ENCOUNTER_ID].constraints.unique
    assert "time_in_hospital:integer_in_1_14" in columns["time_in_hospital"].constraints.other
    assert schema == _schema(asset_graph, dg.AssetKey(["diabetes130", "validated_extract"]))


@pytest.mark.parametrize("spec", load_all_cohorts(), ids=lambda s: s.name)
def test_a_feature_table_shows_its_pandera_schema(asset_graph, spec):
    schema = _schema(asset_graph, dg.AssetKey([spec.name, "encounter_features"]))
    pandera_schema = features.feature_schema(spec)
    assert [c.name for c in schema.columns] == list(pandera_schema.columns)
    columns = {c.name: c for c in schema.columns}
    assert columns["encounter_id"].constraints.unique
    assert any("0, 1" in check for check in columns["label"].constraints.other)
    assert asset_graph.get(dg.AssetKey([spec.name, "encounter_features"])).metadata["cohort"] == spec.name


@pytest.mark.parametrize("spec", load_all_cohorts(), ids=lambda s: s.name)
def test_the_feature_table_schema_is_dagster_panderas_conversion_of_the_pandera_schema(asset_graph, spec):
    """Built from the declared columns (so the Definitions load without Pandera), it is exactly what
    dagster-pandera makes of the schema the table is validated against."""
    shown = _schema(asset_graph, dg.AssetKey([spec.name, "encounter_features"]))
    assert shown == _schemas.feature_table_schema(spec)[_schemas.COLUMN_SCHEMA]
    assert shown == _schemas.pandera_table_schema(features.feature_schema(spec))
