"""The validated tables show their columns in the Dagster UI, built from the Pandera schemas."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest

from clinical_mlops.defs import _schemas
from clinical_mlops.features import build as features
from clinical_mlops.features.cohort import load_all_cohorts
from clinical_mlops.ingestion import diabetes130
from clinical_mlops.validation import rules as validation


@pytest.fixture(scope="module")
def asset_graph():
    from clinical_mlops.definitions import defs

    return defs().resolve_asset_graph()


def _schema(asset_graph, key: dg.AssetKey) -> dg.TableSchema:
    value = asset_graph.get(key).metadata[_schemas.COLUMN_SCHEMA]
    return getattr(value, "schema", value)


def test_validated_encounters_shows_the_staging_table_with_its_format_checks(asset_graph):
    schema = _schema(asset_graph, dg.AssetKey(["synthetic_diabetes130", "validated_extract"]))
    con = duckdb.connect()
    con.execute("CREATE SCHEMA staging")
    con.execute(validation.STAGING_DDL)
    table = con.execute("SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                        "WHERE table_name = 'encounters' ORDER BY ordinal_position").fetchall()
    assert [(c.name, c.type, "YES" if c.constraints.nullable else "NO") for c in schema.columns] == table
    columns = {c.name: c for c in schema.columns}
    assert diabetes130.PATIENT_ID not in columns, "the raw patient number is not a column of the validated table"
    assert "pseudonym" in columns["patient_key"].description.lower()
    rules = {rule.column: rule for rule in validation.format_rules()}
    for name, rule in rules.items():
        if name != diabetes130.PATIENT_ID:
            assert rule.check in columns[name].constraints.other, f"{name} shows its {rule.check} check"
    assert columns[diabetes130.ENCOUNTER_ID].constraints.unique


@pytest.mark.parametrize("spec", load_all_cohorts(), ids=lambda s: s.name)
def test_a_feature_table_shows_its_pandera_schema(asset_graph, spec):
    schema = _schema(asset_graph, dg.AssetKey([spec.name, "encounter_features"]))
    pandera_schema = features.feature_schema(spec)
    assert [c.name for c in schema.columns] == list(pandera_schema.columns)
    columns = {c.name: c for c in schema.columns}
    assert columns["encounter_id"].constraints.unique
    assert any("0, 1" in check for check in columns["label"].constraints.other)
    assert asset_graph.get(dg.AssetKey([spec.name, "encounter_features"])).metadata["cohort"] == spec.name


def test_a_ddl_column_the_parser_does_not_understand_is_refused(monkeypatch):
    monkeypatch.setattr(validation, "STAGING_DDL", "CREATE TABLE t (a VARCHAR, b DOUBLE PRECISION)")
    with pytest.raises(ValueError, match="unparsed column"):
        _schemas.validated_encounters_schema()
