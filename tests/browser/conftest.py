"""A real Airflow stack with login on, the MLflow UI, notifications to a local webhook, and a
headless Chromium (Debian's ``chromium`` + ``chromium-driver``; ``make browser`` installs them).

One stack and one browser serve every browser test (session fixtures). Screenshots go to
``$UI_SCREENSHOTS_DIR`` when it is set (``make screenshots`` sets it to ``docs/``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline_tasks.core.config import PipelineConfig, load_config
from pipeline_tasks.core.http import free_port
from pipeline_tasks.ops.airflow_api import AirflowAPI
from pipeline_tasks.ops.demo_data import land_flights_feed
from pipeline_tasks.ops.stack import Stack

CHROMIUM = os.environ.get("MLOPS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MLOPS_CHROMEDRIVER", "/usr/bin/chromedriver")
DAG_ID = "ml_training_pipeline"
NOTIFY_CONN = "mlops_notify"


@dataclass
class UIStack:
    config: PipelineConfig
    api: AirflowAPI
    password: str
    webhook: Any  # tests/conftest.py WebhookReceiver
    screenshots: Path | None
    state: dict = field(default_factory=dict)  # what one test leaves for the next

    @property
    def url(self) -> str:
        return self.config.airflow_url

    def screenshot(self, driver, name: str) -> None:
        """Save a screenshot for the docs when ``UI_SCREENSHOTS_DIR`` is set."""
        if self.screenshots is not None:
            self.screenshots.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(self.screenshots / f"{name}.png"))

    def wait_for_run(self, run_id: str, timeout: float = 900) -> dict:
        final = self.api.wait_for_run(DAG_ID, run_id, timeout=timeout)
        tasks = {ti["task_id"]: ti for ti in self.api.task_instances(DAG_ID, run_id)}
        return {"run_id": run_id, "state": final["state"], "tasks": tasks}


def require_chromium() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.fail(f"the browser tests need Debian's chromium and chromium-driver; missing "
                    f"{', '.join(missing)}. Install them with `make browser`.", pytrace=False)


@pytest.fixture(scope="session")
def ui_stack(tmp_path_factory, make_webhook) -> UIStack:
    require_chromium()
    home = tmp_path_factory.mktemp("ui-home")
    webhook = make_webhook()
    config = load_config(home=str(home), airflow_port=free_port(), mlflow_port=free_port(),
                         serving_port=free_port())
    stack = Stack(config, components=("api-server", "scheduler", "dag-processor"), mlflow_ui=True,
                  extra_env={
                      "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                      # login on: the views must sit behind the same auth as the UI
                      "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                      "MLOPS_NOTIFY_CONN_ID": NOTIFY_CONN,
                      # every model is sliced by carrier and origin, like the demo model
                      "MLOPS_SLICE_COLUMNS": "carrier,origin",
                      # the tests' sources live in pytest's temporary folder
                      "MLOPS_ALLOWED_SOURCE_ROOTS": str(tmp_path_factory.getbasetemp()),
                      f"AIRFLOW_CONN_{NOTIFY_CONN.upper()}": webhook.url,
                  })
    stack.start()
    try:
        passwords = Path(config.airflow_home) / "simple_auth_manager_passwords.json.generated"
        password = json.loads(passwords.read_text())["admin"]
        api = AirflowAPI(config.airflow_url, "admin", password)
        api.wait_for_dag(DAG_ID)
        # A manual run from the form covers the last complete day before now: land that day
        # and the one before (a small training set).
        today = datetime.now(UTC).date()
        land_flights_feed(config, today - timedelta(days=2), today)
        shots = os.environ.get("UI_SCREENSHOTS_DIR")
        yield UIStack(config, api, password, webhook, Path(shots) if shots else None)
    finally:
        stack.stop()


@contextlib.contextmanager
def _chromium(network_log: bool = False):
    """A headless Chromium with a profile of its own (removed after); ``network_log`` records
    its requests (``driver.get_log("performance")``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="mlops-chromium-")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-proxy-server",
                "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    if network_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _log_in(driver, ui: UIStack) -> None:
    """Log in as admin: the plugin's pages send a browser without a session to Airflow's
    login page, which brings it back."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(ui.url + "/mlops/")
    WebDriverWait(driver, 60).until(EC.url_contains("/auth/login"))
    driver.find_element(By.NAME, "username").send_keys("admin")
    driver.find_element(By.NAME, "password").send_keys(ui.password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, 60).until(lambda drv: "/auth/login" not in drv.current_url)


@pytest.fixture(scope="session")
def launch_chromium():
    """Another headless Chromium: ``with launch_chromium(network_log=True) as driver``."""
    return _chromium


@pytest.fixture(scope="session")
def log_in():
    """``log_in(driver, ui_stack)``: log a browser in as admin."""
    return _log_in


@pytest.fixture(scope="session")
def browser(ui_stack):
    with _chromium() as driver:
        driver.implicitly_wait(10)
        yield driver

