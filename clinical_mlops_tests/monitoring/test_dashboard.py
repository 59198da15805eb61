"""The monitoring dashboard (clinical_mlops.monitoring.dashboard): Evidently's workspace holds one project per
cohort and one snapshot per window, re-publishing is idempotent, the static page carries the per-group intervals
and the bounds and no row-level value; and in a real headless Chromium the ``evidently ui`` server lists the
project and its fairness panel's data covers at least three windows (screenshots in .test-artifacts/monitoring/)."""

from __future__ import annotations

import dataclasses

import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from clinical_mlops.core import warehouse
from clinical_mlops.core.settings import PROJECT_ROOT
from clinical_mlops.features.cohort import load_cohort
from clinical_mlops.governance.policy import load_policy
from clinical_mlops.monitoring import dashboard, steps
from clinical_mlops_tests.conftest import READMISSION
from clinical_mlops_tests.monitoring.test_estimation import _write, calibrated, shifted
from clinical_mlops_tests.helpers import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = PROJECT_ROOT / ".test-artifacts" / "monitoring"
EXTRACTS = ("month_001.csv", "month_002.csv", "month_003.csv")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("dash")
    spec, policy = load_cohort(READMISSION), load_policy()
    frames = {"month_001.csv": (calibrated(2_500, 42, start_id=10_000), "1"),
              "month_002.csv": (calibrated(2_500, 44, start_id=30_000), "1"),
              "month_003.csv": (shifted(2_500, 43, 0.6).assign(encounter_id=np.arange(20_000, 22_500)), "1")}
    con_path = root / "w.duckdb"
    with warehouse.connect(con_path) as con:
        _write(con, spec, calibrated(4_000, 41), frames, labelled={"month_001.csv", "month_002.csv"},
               when=datetime(2026, 1, 5))
        # the asset's one step: estimate the windows, then publish them (Evidently beside the reports folder)
        step = steps.estimate_windows(con, spec, policy=policy, n_simulations=100, reports_dir=root / "reports")
        first = step.dashboard
        assert first.workspace_dir == root / "evidently"
        again = dashboard.publish(con, spec, None, workspace_dir=root / "evidently", reports_dir=root / "reports")
        ids = [int(i) for i in con.execute("SELECT encounter_id FROM ml.batch_predictions").df()["encounter_id"]]
    return {"spec": spec, "root": root, "first": first, "again": again, "step": step, "ids": ids}


def _workspace(path: Path):
    from evidently.ui.workspace import Workspace

    return Workspace(str(path))


def test_the_workspace_holds_one_project_per_cohort_and_one_snapshot_per_window(published):
    first, again, spec = published["first"], published["again"], published["spec"]
    ws = _workspace(first.workspace_dir)
    (project,) = ws.search_project(dashboard.PROJECT_PREFIX + spec.name)
    assert str(project.id) == first.project_id == again.project_id
    runs = [ws.get_run(project.id, s) for s in ws.list_runs(project.id)]
    assert first.snapshots == again.snapshots == len(runs) == 3  # re-published: replaced, not duplicated
    window_ids = {r.window.window_id for r in published["step"].outcome.windows}
    assert {r.metadata["window_id"] for r in runs} == window_ids
    ends = {r.window.window_id: r.window.end for r in published["step"].outcome.windows}
    for run in runs:
        assert run.timestamp == ends[run.metadata["window_id"]]
    dash = ws.get_dashboard(project.id)
    assert len(dash.panels) == first.panels == again.panels and len({p.id for p in dash.panels}) == len(dash.panels)
    titles = [p.title for p in dash.panels]
    assert "Recall gap by race" in titles and "Demographic-parity ratio by gender" in titles
    # the panel's series exist in the snapshots: the estimated recall gap of AfricanAmerican in every window
    column = dashboard.column_name("estimated", "recall_gap", "race", "AfricanAmerican")
    values = [[v.value for v in r.metric_results.values()
               if v.metric_value_location.metric.params.get("column") == column] for r in runs]
    assert all(len(v) == 1 for v in values), values
    bound = dashboard.column_name("policy", "recall_gap_max")
    assert all(any(v.metric_value_location.metric.params.get("column") == bound and v.value == -0.1
                   for v in r.metric_results.values()) for r in runs)
    estimated_only = [r for r in runs if r.metadata["status"] == "estimated_only"]
    assert len(estimated_only) == 1 and all(
        not c.metric_value_location.metric.params.get("column", "").startswith("realised|")
        for c in estimated_only[0].metric_results.values())


def test_the_static_page_shows_intervals_bounds_and_no_row(published):
    html = published["first"].page_path.read_text()
    assert published["first"].page_path.name == "dashboard.html"
    assert "Recall gap by race" in html and "AUROC by race" in html and "data:image/png;base64," in html
    assert "not below <strong>-0.100</strong>" in html and "at least <strong>0.800</strong>" in html  # the bounds
    assert "estimated only" in html and "awaiting labels" in html
    assert "estimated band" in html and "realised CI" in html
    assert "estimated_fairness_within_policy" in html  # the early-warning incident is listed
    text = html.split("data:image/png;base64,")[0] + "".join(
        part.split(")", 1)[-1] for part in html.split("data:image/png;base64,")[1:])
    for encounter_id in published["ids"][::97]:
        assert f">{encounter_id}<" not in text and f"| {encounter_id} |" not in text
    assert "encounter_id" not in text


@pytest.fixture
def evidently_ui(published):
    port = free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / "evidently_ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "evidently"), "ui", "--workspace",
             str(published["first"].workspace_dir), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "DO_NOT_TRACK": "true"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"evidently ui exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/projects", timeout=3) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"evidently ui did not answer: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()), reason="Chromium/chromedriver not installed")
def test_evidently_ui_in_chromium_lists_the_project_and_its_fairness_panel_covers_three_windows(
        published, evidently_ui):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1600,1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    first = published["first"]
    try:
        driver.get(evidently_ui)
        WebDriverWait(driver, 60).until(lambda d: first.project_name in d.find_element(By.TAG_NAME, "body").text)
        driver.save_screenshot(str(ARTIFACTS / "evidently_projects.png"))
        driver.get(f"{evidently_ui}/projects/{first.project_id}")
        WebDriverWait(driver, 60).until(lambda d: "Recall gap by race" in d.find_element(By.TAG_NAME, "body").text)
        time.sleep(2)
        driver.save_screenshot(str(ARTIFACTS / "evidently_dashboard.png"))
        # the fairness panel's own SVG: its series' point markers sit at >= 3 distinct x positions (windows)
        title = driver.find_element(By.XPATH, "//h5[normalize-space()='Recall gap by race']")
        card = title.find_element(By.XPATH, "./ancestor::div[contains(@class, 'MuiCard-root')][1]")
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", card)

        def marker_xs(_):
            marks = card.find_elements(By.CSS_SELECTOR, "svg circle.MuiMarkElement-root")
            return {round(float(m.get_attribute("cx"))) for m in marks if m.get_attribute("cx")}

        WebDriverWait(driver, 30).until(lambda d: len(marker_xs(d)) >= 3)
        time.sleep(1)
        card.screenshot(str(ARTIFACTS / "evidently_fairness_panel.png"))
        (ARTIFACTS / "evidently_dashboard.html").write_text(driver.page_source)
        assert len(marker_xs(driver)) >= 3
        # the panel's data, fetched by the page itself through the UI's own JSON API
        (panel,) = [p for p in _workspace(first.workspace_dir).get_dashboard(first.project_id).panels
                    if p.title == "Recall gap by race"]
        body = json.dumps({"series_filter": [{"tags": [], "metadata": {}, "metric": v.metric,
                                              "metric_labels": v.metric_labels} for v in panel.values]})
        script = ("const cb = arguments[arguments.length - 1];"
                  f"fetch('/api/v2/snapshots/{first.project_id}/data_series_batch', {{method: 'POST', "
                  "headers: {'Content-Type': 'application/json'}, body: arguments[0]})"
                  ".then(r => r.text()).then(cb).catch(e => cb('ERR ' + e));")
        answer = driver.execute_async_script(script, body)
        (ARTIFACTS / "evidently_fairness_series.json").write_text(answer)
        series = json.loads(answer)
        assert len(series["sources"]) >= 3, answer[:500]
        gaps = [s["values"] for s in series["series"]
                if s["params"]["column"] == dashboard.column_name("estimated", "recall_gap", "race", "AfricanAmerican")]
        assert len(gaps) == 1 and sum(v is not None for v in gaps[0]) >= 3, gaps  # one point per window
        assert min(gaps[0]) < -0.1  # the biased window lies beyond the bound
        driver.get(first.page_path.as_uri())
        WebDriverWait(driver, 30).until(lambda d: "Recall gap by race" in d.find_element(By.TAG_NAME, "body").text)
        driver.save_screenshot(str(ARTIFACTS / "static_dashboard.png"))
    finally:
        driver.quit()


def test_an_unchanged_window_keeps_its_snapshot_and_a_changed_one_is_replaced(published, tmp_path):
    spec, step, root = published["spec"], published["step"], published["root"]
    ws_dir = tmp_path / "evidently"
    with warehouse.connect(root / "w.duckdb", read_only=True) as con:
        dashboard.publish(con, spec, step.outcome, workspace_dir=ws_dir, reports_dir=tmp_path / "reports")
        ws = _workspace(ws_dir)
        (project,) = ws.search_project(dashboard.PROJECT_PREFIX + spec.name)
        before = {ws.get_run(project.id, s).metadata["window_id"]: s for s in ws.list_runs(project.id)}
        dashboard.publish(con, spec, step.outcome, workspace_dir=ws_dir, reports_dir=tmp_path / "reports")
        same = {ws.get_run(project.id, s).metadata["window_id"]: s for s in ws.list_runs(project.id)}
        # the newest window without its rows: its score quantiles are gone, so its snapshot changes
        fewer = dataclasses.replace(step.outcome, windows=step.outcome.windows[:-1])
        dashboard.publish(con, spec, fewer, workspace_dir=ws_dir, reports_dir=tmp_path / "reports")
        changed = {ws.get_run(project.id, s).metadata["window_id"]: s for s in ws.list_runs(project.id)}
    newest = step.outcome.windows[-1].window.window_id
    assert same == before and len(same) == 3
    assert set(changed) == set(before) and changed[newest] != before[newest]
    assert all(changed[w] == before[w] for w in before if w != newest)
