"""Lineage from DuckDB: which extracts and code trained a version, which versions used an extract —
consistent with Dagster's asset graph and the data versions Dagster recorded."""

from __future__ import annotations

import json
from functools import partial

import dagster as dg
import pytest

from clinical_mlops.cli import audit as cli_audit
from clinical_mlops.audit import ledger, lineage
from clinical_mlops.core import provenance, warehouse
from clinical_mlops_tests.audit._audit_graph import COHORT
from clinical_mlops_tests.helpers import run_cli

_cli = partial(run_cli, cli_audit.register)


def test_which_extracts_and_which_code_trained_a_version(graph, con):
    record = lineage.model_lineage(con, graph.candidate, graph.candidate_version)
    landed = dict(con.execute("SELECT extract_id, sha256 FROM raw.extracts").fetchall())
    assert [e.extract_id for e in record.extracts] == graph.extract_ids
    assert {e.extract_id: e.sha256 for e in record.extracts} == landed
    assert all(e.unchanged and e.rows_landed > 0 for e in record.extracts)
    assert record.git_commit == provenance.git_commit()
    assert record.lock_sha256 == provenance.lock_file_sha256()
    assert record.params["algorithm"] == "hist_gradient_boosting" and record.params["max_iter"] == 30
    assert record.role == "candidate" and record.cohort == COHORT
    assert lineage.resolve_version(con, graph.candidate, "latest") == graph.candidate_version
    with pytest.raises(LookupError):
        lineage.model_lineage(con, graph.candidate, "999")


def test_which_models_used_an_extract(graph, con):
    first = graph.extract_ids[0]
    models = lineage.models_using_extract(con, first)
    assert {(m["model_name"], m["model_version"]) for m in models} == {
        (graph.candidate, graph.candidate_version), (graph.baseline, graph.baseline_version)}
    sha = models[0]["sha256"]
    assert lineage.models_using_extract(con, sha) == models, "an extract can be named by its data version"
    assert lineage.models_using_extract(con, "never_landed.csv") == []


def _upstream(graph_def, key: dg.AssetKey) -> set[str]:
    seen: set[dg.AssetKey] = set()
    stack = [key]
    while stack:
        current = stack.pop()
        for parent in graph_def.get(current).parent_keys:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return {k.to_user_string() for k in seen | {key}}


@pytest.mark.parametrize("role", ["baseline", "candidate"])
def test_the_lineage_path_is_dagsters_asset_graph(role):
    from clinical_mlops.definitions import defs
    from clinical_mlops.features.cohort import load_all_cohorts

    asset_graph = defs().resolve_asset_graph()
    specs = load_all_cohorts()
    assert COHORT in {spec.name for spec in specs}
    for spec in specs:  # every cohort, each from its own source's extracts
        path = lineage.asset_path(spec.name, role, spec.source)
        assert _upstream(asset_graph, dg.AssetKey([spec.name, f"{role}_model"])) == set(path), spec.name
        assert path[0] == f"{spec.source}/raw_extract"


def test_recorded_data_versions_are_the_ones_dagster_recorded(graph, con):
    record = lineage.model_lineage(con, graph.candidate, graph.candidate_version)
    for extract in record.extracts:
        result = graph.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(["synthetic_diabetes130", "raw_extract"]), asset_partitions=[extract.extract_id]),
            limit=1,
        )
        assert result.records[0].asset_materialization.tags["dagster/data_version"] == extract.sha256
    model_event = graph.instance.fetch_materializations(dg.AssetKey([COHORT, "candidate_model"]), limit=1).records[0]
    metadata = model_event.asset_materialization.metadata
    assert metadata["input_extracts"].value == [{"extract_id": e.extract_id, "sha256": e.sha256} for e in record.extracts]
    assert metadata["git_commit"].value == record.git_commit
    assert record.assets == [
        *(f"synthetic_diabetes130/raw_extract[{e}]" for e in graph.extract_ids),
        *(f"synthetic_diabetes130/validated_extract[{e}]" for e in graph.extract_ids),
        f"{COHORT}/encounter_features", f"{COHORT}/training_split", f"{COHORT}/candidate_model",
    ]


def test_the_ledger_holds_the_same_lineage(graph):
    entries = list(ledger.read_entries(graph.ledger_path))
    registered = [e for e in entries if e.event_type == "model_registered" and
                  e.subject == f"model:{graph.candidate}/{graph.candidate_version}"]
    assert len(registered) == 1
    extracts = {e["extract_id"]: e["sha256"] for e in registered[0].payload["input_extracts"]}
    landed = {e.payload["partition"]: e.payload["data_version"] for e in entries
              if e.event_type == "asset_materialization" and e.payload["asset_key"] == "synthetic_diabetes130/raw_extract"}
    assert extracts == landed


def test_model_inputs_view_for_ad_hoc_sql(graph):
    with warehouse.connect(graph.workspace.warehouse) as con:
        lineage.create_views(con)
        rows = con.execute("SELECT DISTINCT model_name, extract_id FROM audit.model_inputs ORDER BY 1, 2").fetchall()
    assert rows == sorted((m, e) for m in (graph.baseline, graph.candidate) for e in graph.extract_ids)


def test_lineage_command(graph, capsys):
    base = ["audit", "lineage", "--warehouse", str(graph.workspace.warehouse)]
    assert _cli([*base, "--model", graph.candidate, "--version", graph.candidate_version]) == 0
    text = capsys.readouterr().out
    assert graph.extract_ids[0] in text and "git commit" in text and "candidate_model" in text
    assert _cli([*base, "--extract", graph.extract_ids[1], "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["models"]) == 2
    assert _cli([*base, "--model", graph.candidate, "--version", "42"]) == 2
