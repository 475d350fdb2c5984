"""The MLflow UI in a real headless browser: the search's parent run and its nested trial runs are listed.

Starts `hpsearch ui` on a small search's store (bound to 127.0.0.1), opens the
runs page hpsearch prints in Debian's Chromium through chromedriver, expands
the parent run and checks every trial's run is shown; then opens the compare-runs link hpsearch prints
and checks the trials and their parallel coordinates plot are drawn. Marker `browser`.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from search.tuner import run_search
from tests._search_helpers import small_spec

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout} s"
        time.sleep(1)


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_mlflow_ui_lists_parent_and_nested_trial_runs(ray_local, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    storage = tmp_path / "runs"
    result = run_search(small_spec(tmp_path, name="ui-test", samples=4, max_epochs=3), name="ui", storage=str(storage), on_event=None)
    port = _free_port()
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost"}
    ui = subprocess.Popen([sys.executable, "-m", "search.cli", "ui", "--storage", str(storage), "--port", str(port)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    driver = None
    try:
        _wait_http(f"http://127.0.0.1:{port}/", timeout=180)
        url = result.tracking.ui_url.replace(":5000/", f":{port}/")
        assert url.endswith(f"/#/experiments/{result.tracking.experiment_id}/runs")
        options = Options()
        options.binary_location = CHROMIUM
        for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--window-size=1600,1000", f"--user-data-dir={tmp_path / 'chrome'}"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.get(url)
        expected = len(result.records) + 1  # the parent + one run per trial

        def count(html: str) -> int:
            shown = re.search(r"(\d+)(?:</strong>)? matching runs", html)
            return int(shown.group(1)) if shown else -1

        _wait_for(driver, lambda html: count(html) == expected and result.name in html, 90)
        deadline = time.monotonic() + 60
        expand = []
        while not expand and time.monotonic() < deadline:  # the run rows render after the count
            expand = driver.find_elements(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']")
            time.sleep(0.5)
        assert expand, "the parent run has no expander: trial runs are not nested under it"
        assert not any(t in driver.page_source for t in [r.trial_id for r in result.records]), "children should be folded under the parent"
        expand[0].click()
        trial_ids = [r.trial_id for r in result.records]
        _wait_for(driver, lambda html: all(t in html for t in trial_ids), 60)
        driver.save_screenshot(str(tmp_path / "mlflow_runs.png"))
        assert (tmp_path / "mlflow_runs.png").stat().st_size > 10_000
        # the printed compare link: every trial side by side, with the parallel coordinates plot drawn
        compare = result.tracking.compare_url.replace(":5000/", f":{port}/")
        assert "/#/compare-runs?runs=" in compare
        driver.get(compare)
        _wait_for(driver, lambda html: "Parallel Coordinates Plot" in html and all(t in html for t in trial_ids), 90)
        _wait_for(driver, lambda html: "plotly" in html or "parcoords" in html, 60)  # the plot itself is rendered
        driver.save_screenshot(str(tmp_path / "mlflow_compare.png"))
    finally:
        if driver is not None:
            driver.quit()
        os.killpg(ui.pid, 15)
        ui.wait(timeout=30)


def _wait_for(driver, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition(driver.page_source):
        assert time.monotonic() < deadline, "the MLflow UI page never showed what was expected"
        time.sleep(1)
