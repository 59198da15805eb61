"""The Dagster and MLflow UIs in a real headless Chromium, on a small materialized graph.

A temporary project instance gets one clean extract, one extract carrying an SSN (its blocking
``no_direct_identifiers`` check fails) and one training run; then the processes ``make ui``
starts (``dagster dev`` and ``mlflow ui``, both on 127.0.0.1, here on free ports) serve it and
Selenium drives Debian's Chromium (installed by ``make setup`` → ``scripts/install-browser``).
Screenshots and page sources go to ``.test-artifacts/ui/``.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from clinical_mlops.core.settings import PROJECT_ROOT
from clinical_mlops_tests.helpers import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = PROJECT_ROOT / ".test-artifacts" / "ui"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,1100")
WAIT = 90
SOURCE = "synthetic_diabetes130"
COHORT = f"{SOURCE}_readmission_30d"
TRAINED = (f"{COHORT}/encounter_features", f"{COHORT}/training_split", f"{COHORT}/candidate_model")
"""A small graph: one cohort's features, split and candidate model (not the whole training job)."""


def test_make_ui_binds_both_servers_to_loopback():
    """``make ui``'s two servers listen on 127.0.0.1 only (read from make's dry run of the target)."""
    recipe = subprocess.run(["make", "-n", "ui"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHON": sys.executable}).stdout
    mlflow = [line for line in recipe.splitlines() if "mlflow ui" in line or "mlflow server" in line]
    dagster = [line for line in recipe.splitlines() if "dagster dev" in line or "dagster-webserver" in line]
    assert len(mlflow) == 1 and len(dagster) == 1, recipe
    assert re.search(r"--host 127\.0\.0\.1\b", mlflow[0]), mlflow[0]
    assert re.search(r"(-h|--host) 127\.0\.0\.1\b", dagster[0]), dagster[0]
    assert "0.0.0.0" not in recipe


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[:4]} exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"{url} did not answer in {timeout} s: {log.read_text()[-3000:]}")


class UiGraph:
    """The materialized temporary instance and its two servers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CLINICAL_MLOPS_WAREHOUSE",
                                                                  "CLINICAL_MLOPS_LEDGER", "DAGSTER_RUN_ID")},
            "CLINICAL_MLOPS_DATA_DIR": str(root / "data"),
            "DAGSTER_HOME": str(root / "home"),
            "CLINICAL_MLOPS_PSEUDONYM_KEY": "ui-test-key",
            "CLINICAL_MLOPS_LEDGER_KEY": "ui-test-ledger-key",
            "PYTHONPATH": str(PROJECT_ROOT),
        }
        self.outcomes: list[dict] = []
        self.processes: list[subprocess.Popen] = []
        self.dagster_url = self.mlflow_url = ""

    def materialize(self, small_encounters) -> None:
        (self.root / "home").mkdir()
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", self.root / "home" / "dagster.yaml")
        landing = self.root / "data" / "landing" / SOURCE  # the zone holds one folder per source
        landing.mkdir(parents=True)
        small_encounters.iloc[:2000].to_csv(landing / "clean.csv", index=False, lineterminator="\n")
        with_ssn = small_encounters.iloc[2000:2300].copy()
        with_ssn.loc[with_ssn.index[:3], "payer_code"] = "123-45-6789"
        with_ssn.to_csv(landing / "with_ssn.csv", index=False, lineterminator="\n")
        done = subprocess.run(
            [sys.executable, "-m", "clinical_mlops_tests.cli._fault_driver", "--jobs",
             f"ingestion_job_{SOURCE}:clean.csv", f"ingestion_job_{SOURCE}:with_ssn.csv", f"assets={','.join(TRAINED)}"],
            env=self.env, cwd=self.root, capture_output=True, text=True, timeout=600,
        )
        self.outcomes = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert len(self.outcomes) == 3, done.stderr[-3000:]
        # The landing zone sensor of `dagster dev` would land these files again in runs of its own
        # and change which check evaluation is the latest: the extracts are in the warehouse now.
        shutil.rmtree(landing)
        landing.mkdir()

    def start(self) -> None:
        mlflow_port, dagster_port = free_port(), free_port()
        (self.root / "data" / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
        self.mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        self.dagster_url = f"http://127.0.0.1:{dagster_port}"
        servers = {
            "mlflow": [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(mlflow_port),
                       "--backend-store-uri", "sqlite:///data/mlflow/mlflow.db",
                       "--default-artifact-root", "data/mlflow/artifacts"],
            "dagster": [str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(dagster_port),
                        "-w", str(PROJECT_ROOT / "workspace.yaml")],
        }
        for name, command in servers.items():
            log = (self.root / f"{name}.log").open("w")
            self.processes.append(subprocess.Popen(command, env=self.env, cwd=self.root, stdout=log,
                                                   stderr=subprocess.STDOUT, start_new_session=True))
        _wait_http(f"{self.mlflow_url}/health", self.processes[0], self.root / "mlflow.log")
        _wait_http(f"{self.dagster_url}/server_info", self.processes[1], self.root / "dagster.log")

    def stop(self) -> None:
        import signal

        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def ui(tmp_path_factory, small_encounters) -> Iterator[UiGraph]:
    graph = UiGraph(tmp_path_factory.mktemp("ui"))
    graph.materialize(small_encounters)
    try:
        graph.start()
        yield graph
    finally:
        graph.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def _save(driver, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    (ARTIFACTS / f"{name}.html").write_text(driver.page_source)


def _wait_text(driver, *texts: str, timeout: float = WAIT) -> str:
    """Wait until every text is in the page's visible body text; return that text."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    body = ""

    def ready(d) -> bool:
        nonlocal body
        body = d.find_element(By.TAG_NAME, "body").text
        return all(t in body for t in texts)

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.5).until(ready)
    except TimeoutException:
        missing = [t for t in texts if t not in body]
        pytest.fail(f"{driver.current_url}: never showed {missing}; page text:\n{body[:3000]}")
    return body


def expected_groups() -> set[str]:
    from clinical_mlops.definitions import defs

    return {spec.group_name for spec in defs().resolve_all_asset_specs()}


@pytest.mark.e2e
@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="Debian's chromium and chromium-driver are not installed (make setup installs them as root)")
def test_the_dagster_and_mlflow_uis_show_the_graph_checks_and_runs(ui: UiGraph, browser):
    """Groups in the catalog, the candidate's metadata, the failed gate, and the MLflow run behind the link."""
    from selenium.webdriver.common.by import By

    ingestion_clean, ingestion_ssn, training = ui.outcomes
    assert not ingestion_ssn["success"]
    assert ingestion_clean["success"] and training["success"], ui.outcomes
    assert ingestion_ssn["blocking_failures"] == [f"{SOURCE}/raw_extract:no_direct_identifiers"]

    # 1. The asset catalog lists every group defined in clinical_mlops.defs.
    groups = expected_groups()
    assert len(groups) >= 5
    browser.get(f"{ui.dagster_url}/asset-groups")
    _dismiss_welcome(browser)
    body = _wait_text(browser, *sorted(groups))
    _save(browser, "01_asset_groups")
    assert all(g in body for g in groups)

    # 2. The candidate model's page shows its metadata: metrics and the MLflow run link.
    browser.get(f"{ui.dagster_url}/assets/{COHORT}/candidate_model")
    _wait_text(browser, "mlflow_run", "test_auroc", "registered_model", f"{COHORT}_candidate")
    _save(browser, "02_candidate_model")
    links = [a.get_attribute("href") for a in browser.find_elements(By.TAG_NAME, "a")]
    run_links = [h for h in links if h and "/#/experiments/" in h and "/runs/" in h]
    assert run_links, links

    # 3. The failed blocking gate is visible as failed on the source's raw_extract checks tab.
    browser.get(f"{ui.dagster_url}/assets/{SOURCE}/raw_extract?view=checks")
    body = _wait_text(browser, "no_direct_identifiers", "This is a blocking asset check",
                      "direct identifiers found, extract not landed: payer_code: ssn")
    _save(browser, "03_raw_encounters_checks")
    result = body.split("Evaluation result", 1)[1].split("Timestamp", 1)[0]
    assert result.strip() == "Failed", result

    # 4. The MLflow link opens the run in the MLflow UI (the link's route, on this test's MLflow port).
    route = run_links[0].split("/#/", 1)[1]
    run_id = route.rsplit("/runs/", 1)[1].strip("/")
    browser.get(f"{ui.mlflow_url}/#/{route}")
    _wait_text(browser, run_id, "Finished", "git_commit")
    _save(browser, "04_mlflow_run")


def _dismiss_welcome(driver) -> None:
    """Close Dagster's first-visit "Join the Dagster community" dialog if it shows (it covers the page)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, 15).until(
            ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Skip']"))).click()
    except TimeoutException:
        pass
