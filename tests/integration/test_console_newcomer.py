"""A newcomer's first look, in headless Chromium: ``authtrail up --demo`` as ``make up``
runs it (demo traffic with brute-force bursts, the periodic verify), then the console URL
it prints. The demo tenants' activity is on the dashboard; a locked account leads to the
failed logins that locked it; every tenant's chain is marked intact by the verify run
``up`` made itself. Screenshots: tests/artifacts/console/newcomer-*.png.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from producers.traffic import tenant_ids
from sinks.server import ServerBackend
from tests.integration.broker_fixtures import log_tail, wait_for_log_text
from tests.integration.console_browser import browser_session, not_pwned, screenshot

pytestmark = pytest.mark.integration

DEMO_TENANTS = tenant_ids(5)  # what `up --demo` sends (authtrail/up.py)


@dataclass
class Demo:
    data_dir: Path
    log: Path
    console_url: str
    token: str
    front_url: str


def _wait_until(condition: Any, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1)
    raise AssertionError(f"{what} not within {timeout:g} s\n{log_tail(log)}")


def _locked_accounts(demo: Demo) -> int:
    with ServerBackend(demo.front_url, read_only=True) as store:
        table = store.query_arrow(
            "SELECT count() FROM lockouts WHERE event_type = 'ACCOUNT_LOCKED'"
        )
    return int(table.column(0)[0].as_py())


def _verified_intact(demo: Demo) -> bool:
    """The periodic verify's report says intact and covers every demo tenant."""
    try:
        report = json.loads((demo.data_dir / "verify-report.json").read_text())
    except (OSError, ValueError):
        return False
    verdicts = {tenant["tenant_id"]: tenant["damage"] is None for tenant in report["tenants"]}
    return report["exit_code"] == 0 and all(verdicts.get(t) for t in DEMO_TENANTS)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    root = tmp_path_factory.mktemp("newcomer")
    data_dir, log = root / "data", root / "up.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "authtrail.cli", "--data-dir", str(data_dir), "up",
             "--demo", "--rate", "150", "--front-port", "0",
             "--console-listen", "127.0.0.1:0", "--verify-every", "5"],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_log_text(log, "Ctrl-C stops everything", process, timeout=90)
        text = log.read_text()
        console_url = re.search(r"web console \(read-only\): (\S+)", text)
        token = re.search(r"analyst token: (\S+)", text)
        assert console_url and token, log_tail(log)
        endpoint = json.loads((data_dir / "clickhouse.endpoint").read_text())
        state = Demo(data_dir, log, console_url[1], token[1], endpoint["url"])
        _wait_until(lambda: _locked_accounts(state) > 0, 180, "a demo account locked", log)
        _wait_until(lambda: _verified_intact(state), 180, "verify by up: intact", log)
        assert "verify: intact" in log.read_text()
        yield state
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            assert process.wait(90) == 0, log_tail(log)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def browser(demo: Demo) -> Iterator[Any]:
    yield from browser_session(demo.token)


def test_a_newcomer_sees_activity_a_lockout_and_its_failures_and_intact_chains(
    demo: Demo, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(demo.console_url)
    tenants_chart = browser.find_element(
        By.CSS_SELECTOR, "svg.chart[aria-label='events per tenant']"
    )
    shown = tenants_chart.get_attribute("innerHTML")
    assert all(f">{tenant}<" in shown for tenant in DEMO_TENANTS), shown
    screenshot(browser, "newcomer-dashboard")

    # Lockouts: a locked account, and a click to the failures that locked it.
    browser.get(demo.console_url + "lockouts")
    rows = browser.find_elements(By.CSS_SELECTOR, "#lockouts tbody tr.ACCOUNT_LOCKED")
    assert rows, browser.page_source
    cells = [cell.text for cell in rows[0].find_elements(By.TAG_NAME, "td")]
    tenant, user, counted = cells[1], cells[3], int(cells[6])
    screenshot(browser, "newcomer-lockouts")
    rows[0].find_element(By.TAG_NAME, "a").click()
    WebDriverWait(browser, 30).until(lambda driver: "/lockout?" in driver.current_url)
    assert browser.find_element(By.TAG_NAME, "h1").text.endswith(f"of {tenant}")
    assert user in browser.find_element(By.ID, "decision").text
    failures = browser.find_elements(By.CSS_SELECTOR, "#failures tr")[1:]
    assert len(failures) == counted, browser.page_source  # what the detector counted
    screenshot(browser, "newcomer-lockout-failures")
    # Each failure opens its own event page: a failed login of that account.
    failures[0].find_element(By.TAG_NAME, "a").click()
    WebDriverWait(browser, 30).until(lambda driver: "/event?" in driver.current_url)
    event = browser.find_element(By.ID, "event").text
    assert "LOGIN_FAILED" in event and user in event, event

    # Integrity: every demo tenant's chain intact, from the verify run up made.
    browser.get(demo.console_url + "integrity")
    assert "intact (exit code 0)" in browser.page_source
    verdicts = {
        row.find_elements(By.TAG_NAME, "td")[0].text: row.find_elements(By.TAG_NAME, "td")[1].text
        for row in browser.find_elements(By.CSS_SELECTOR, "#verdicts tr")[1:]
    }
    assert all(verdicts.get(tenant) == "ok" for tenant in DEMO_TENANTS), verdicts
    assert set(verdicts.values()) == {"ok"}, verdicts
    not_pwned(browser)
    screenshot(browser, "newcomer-integrity")
