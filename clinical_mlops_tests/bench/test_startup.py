"""The start-up benchmark measures the commands a user runs: ``--help``, and ``land`` of a generated extract
into a fresh workspace (then a second one into the same workspace). Behaviour only: no timing is asserted."""

from __future__ import annotations

import csv

from clinical_mlops.bench import startup


def test_the_extracts_are_two_of_the_asked_size(tmp_path):
    first, second = startup.startup_extracts(tmp_path, rows=30)
    for path in (first, second):
        with path.open(newline="") as handle:
            assert sum(1 for _ in csv.DictReader(handle)) == 30
    assert first.read_bytes() != second.read_bytes()


def test_the_commands_are_the_installed_console_script():
    argv = startup.cli_argv("--help")
    assert argv[-1] == "--help" and ("clinical-mlops" in argv[0] or argv[1:3] == ["-m", "clinical_mlops.cli"])


def test_run_startup_lands_every_row_in_a_fresh_workspace(tmp_path):
    result = startup.run_startup(tmp_path, rows=200)
    assert result["land"]["status"] == "landed" and result["land"]["fresh_workspace"]
    assert result["land"]["rows_landed"] == 200 == result["land"]["rows_valid"] + result["land"]["rows_quarantined"]
    assert not result["land"]["failed_checks"]
    for step in ("help", "land", "land_again"):
        assert result[step]["wall_seconds"] > 0 and len(result[step]["samples_wall_seconds"]) == 1
    assert (tmp_path / "workspace_0" / "data" / "warehouse.duckdb").exists()
