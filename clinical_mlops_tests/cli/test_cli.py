"""The command line end to end, in a subprocess with its own data folder and Dagster home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "CLINICAL_MLOPS_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "CLINICAL_MLOPS_PSEUDONYM_KEY": "cli-test-key",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "clinical_mlops.cli.main", *args],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )


def test_land_reports_counts_and_fails_clearly_on_a_bad_extract(tmp_path, small_encounters):
    good = tmp_path / "good.csv"
    small_encounters.head(200).to_csv(good, index=False)
    ok = _run(["land", str(good), "--source", "synthetic_diabetes130"], tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    report = json.loads(ok.stdout)
    assert (report["rows_landed"], report["rows_valid"], report["rows_quarantined"]) == (200, 200, 0)

    again = _run(["land", str(good), "--source", "synthetic_diabetes130"], tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "already_landed"

    bad = tmp_path / "bad.csv"
    small_encounters.head(20).rename(columns={"gender": "sex"}).to_csv(bad, index=False)
    refused = _run(["land", str(bad), "--source", "synthetic_diabetes130"], tmp_path)
    assert refused.returncode == 1
    assert "missing column(s): gender" in refused.stderr and "unexpected column(s): sex" in refused.stderr
    assert "Traceback" not in refused.stderr
