"""Fixtures of the audit tests: one small trained graph per worker process, and a connection to its warehouse.

The graph (:func:`clinical_mlops_tests.audit._audit_graph.build`) is session-scoped, so the bundle,
lineage, model-card and replay tests that run in the same worker share one build, as they did
before. Tests that change the warehouse do it inside a transaction they roll back, so the graph
stays as built; what they append to its ledger is only ever more entries.
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from clinical_mlops.core import warehouse
from clinical_mlops_tests.audit._audit_graph import TrainedGraph, build


@pytest.fixture(scope="session")
def graph(tmp_path_factory, mlflow_template, small_encounters) -> TrainedGraph:
    return build(tmp_path_factory.mktemp("audit_graph"), mlflow_template, small_encounters)


@pytest.fixture
def con(graph: TrainedGraph) -> Iterator[duckdb.DuckDBPyConnection]:
    with warehouse.connect(graph.workspace.warehouse) as connection:
        yield connection
