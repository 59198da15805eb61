"""Set-up does only what it must: the browser is installed for the tests only, never for the demo."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from clinical_mlops.core.settings import PROJECT_ROOT


def _recipe(target: str) -> str:
    return subprocess.run(["make", "-n", target], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHON": sys.executable}).stdout


@pytest.mark.parametrize("target", ["demo", "bench", "ui", "install"])
def test_targets_that_run_the_product_install_the_environment_but_no_browser(target):
    recipe = _recipe(target)
    assert "uv sync --frozen" in recipe
    assert "install-browser" not in recipe


@pytest.mark.parametrize("target", ["setup", "test"])
def test_setup_and_test_install_the_browser(target):
    recipe = _recipe(target)
    assert "uv sync --frozen" in recipe and "scripts/install-browser" in recipe


def test_ci_runs_the_readme_test_command():
    assert "make test" in (PROJECT_ROOT / ".ci" / "run").read_text()
