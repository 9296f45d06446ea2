"""A newcomer's first look, in headless Chromium: ``authtrail up --demo`` as ``make up``
runs it (demo traffic with brute-force bursts, the periodic verify), then the console URL
it prints. The demo tenants' activity is on the dashboard; a locked account leads to the
failed logins that locked it; every tenant's chain is marked intact by the verify run
``up`` made itself. Screenshots: tests/artifacts/console/newcomer-*.png.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authtrail.producers.traffic import tenant_ids
from authtrail.sinks.server import ServerBackend
from tests.integration.broker_fixtures import log_tail
from tests.integration.console_fixtures import (
    Up,
    browser_session,
    not_pwned,
    running_up,
    screenshot,
)

pytestmark = pytest.mark.integration

DEMO_TENANTS = tenant_ids(5)  # what `up --demo` sends (authtrail/cli/up.py)


def _wait_until(condition: Any, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1)
    raise AssertionError(f"{what} not within {timeout:g} s\n{log_tail(log)}")


def _locked_accounts(demo: Up) -> int:
    with ServerBackend(demo.front_url, read_only=True) as store:
        table = store.query_arrow(
            "SELECT count() FROM lockouts WHERE event_type = 'ACCOUNT_LOCKED'"
        )
    return int(table.column(0)[0].as_py())


def _verified_intact(demo: Up) -> bool:
    """The periodic verify's report says intact and covers every demo tenant."""
    try:
        report = json.loads((demo.data_dir / "verify-report.json").read_text())
    except (OSError, ValueError):
        return False
    verdicts = {tenant["tenant_id"]: tenant["damage"] is None for tenant in report["tenants"]}
    return report["exit_code"] == 0 and all(verdicts.get(t) for t in DEMO_TENANTS)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    flags = ("--demo", "--rate", "150", "--verify-every", "5")
    with running_up(tmp_path_factory.mktemp("newcomer"), *flags) as up:
        _wait_until(lambda: _locked_accounts(up) > 0, 180, "a demo account locked", up.log)
        _wait_until(lambda: _verified_intact(up), 180, "verify by up: intact", up.log)
        assert "verify: intact" in up.log.read_text()
        yield up
    assert up.process.returncode == 0, log_tail(up.log)


@pytest.fixture(scope="module")
def browser(demo: Up) -> Iterator[Any]:
    yield from browser_session(demo.token)


def test_a_newcomer_sees_activity_a_lockout_and_its_failures_and_intact_chains(
    demo: Up, browser: Any
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
