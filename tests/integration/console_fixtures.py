"""What the console tests share: ``authtrail up`` in a process group, read from its
banner, and headless Chromium (Debian's chromium and chromedriver, driven by Selenium)
logged in as the analyst; screenshots go to tests/artifacts/console/ (git-ignored). The
browser tests skip, saying why, where it is not installed."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.broker_fixtures import log_tail, wait_for_log_text

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
NO_BROWSER = "headless Chromium not installed (apt-get install chromium chromium-driver)"


@dataclass
class Up:
    """A running ``authtrail up`` and what its banner and endpoint file said."""

    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes]
    console_url: str
    token: str
    front_url: str
    bootstrap_servers: str


@contextmanager
def running_up(root: Path, *flags: str) -> Iterator[Up]:
    """``authtrail up --front-port 0 --console-listen 127.0.0.1:0 FLAGS`` with its data in
    ``root``/data, until the block ends (SIGINT; SIGKILL if it has not stopped in 90 s)."""
    data_dir, log = root / "data", root / "up.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "authtrail.cli", "--data-dir", str(data_dir), "up",
             "--front-port", "0", "--console-listen", "127.0.0.1:0", *flags],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_log_text(log, "Ctrl-C stops everything", process, timeout=90)
        text = log.read_text()
        console_url = re.search(r"web console \(read-only\): (\S+)", text)
        token = re.search(r"analyst token: (\S+)", text)
        assert console_url and token, log_tail(log)
        endpoint = json.loads((data_dir / "clickhouse.endpoint").read_text())
        yield Up(data_dir, log, process, console_url[1], token[1], endpoint["url"],
                 endpoint["bootstrap_servers"])  # fmt: skip
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(90)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


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
