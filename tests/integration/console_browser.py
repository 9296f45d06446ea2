"""Headless Chromium for the console tests (Debian's chromium and chromedriver, driven
by Selenium), logged in as the analyst; screenshots go to tests/artifacts/console/
(git-ignored). Tests skip, saying why, where the browser is not installed."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
NO_BROWSER = "headless Chromium not installed (apt-get install chromium chromium-driver)"


def browser_session(token: str) -> Iterator[Any]:
    """A browser sending the analyst's credential with every request."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(NO_BROWSER)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Without the networking flags Chromium keeps calling hosts this machine cannot reach.
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--window-size=1280,1000"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        # The browser logs in as a person would after the basic-auth prompt.
        credential = base64.b64encode(f"analyst:{token}".encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {credential}"}}
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str) -> None:
    path = ARTIFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    assert path.stat().st_size > 1000


def not_pwned(driver: Any) -> None:
    assert driver.execute_script("return window.__pwned === undefined")
