"""Loading the Definitions and starting the command line import none of the libraries only asset bodies
need: those load when an asset runs (a fresh interpreter per check, so nothing imported by other tests counts)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from clinical_mlops.core.settings import PROJECT_ROOT

HEAVY = ("sklearn", "mlflow", "matplotlib", "scipy", "pandera", "evidently", "fairlearn")

LOAD_DEFINITIONS = """
from clinical_mlops.definitions import defs
repository = defs().get_repository_def()
assert repository.get_all_jobs() and repository.asset_graph.asset_check_keys
"""
START_CLI = """
from clinical_mlops.cli import main
main.build_parser().format_help()
"""
START_LAND = """
from clinical_mlops.cli import pipeline, runs
from clinical_mlops.defs.audit import sensors
"""


def _loaded_after(code: str) -> list[str]:
    probe = code + f"\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("what, code", [("the Definitions", LOAD_DEFINITIONS), ("clinical-mlops --help", START_CLI),
                                        ("the land command's modules", START_LAND)], ids=["definitions", "cli", "land"])
def test_starting_up_imports_no_library_that_only_asset_bodies_need(what, code):
    assert _loaded_after(code) == [], f"{what} imported them at start-up"


def test_the_benchmark_names_the_same_libraries():
    from clinical_mlops.bench import imports

    assert set(imports.HEAVY_MODULES) == set(HEAVY)


def test_land_runs_the_ingestion_job_the_full_definitions_define():
    """``clinical-mlops land`` loads only the landing and validation assets; the job it runs (and so the run
    Dagster records) is the one the whole graph defines: the same snapshot."""
    from clinical_mlops.cli import runs
    from clinical_mlops.defs.jobs import job_name
    from clinical_mlops.sources.contract import load_all_sources

    full = runs.load_definitions()
    for source in load_all_sources():
        name = job_name("ingestion", source)
        job = runs.ingestion_definitions(source).resolve_job_def(name)
        assert job.get_job_snapshot_id() == full.resolve_job_def(name).get_job_snapshot_id(), source
