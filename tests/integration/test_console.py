"""The web console on a real pipeline, in headless Chromium.

``authtrail up`` (local broker, worker subprocess, sink, chdb behind its HTTP front) serves
the console; the test sends known events through Kafka, waits until they are stored and
signed, then drives Debian's Chromium with Selenium: pages load with that data, a search
finds a known event whose proof bundle verifies offline, paging walks the results, a
lockout injected while the page is open appears without a reload, and hostile input is
shown as text, never run. Without the credential every request gets 401; nothing the
console is sent writes to the store. Screenshots go to tests/artifacts/console/
(git-ignored). The Chromium tests skip, saying why, where chromium or chromedriver is not
installed (.ci/run installs Debian's packages).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authtrail.keys import load_keyring
from authtrail.producers.sdk import AuditProducer, new_event
from authtrail.sinks.server import ServerBackend
from authtrail.stream.core.bundle import load_bundle, verify_bundle
from tests.integration.broker_fixtures import log_tail, wait_for_log_text
from tests.integration.console_fixtures import (
    Up,
    browser_session,
    not_pwned,
    running_up,
    screenshot,
)

pytestmark = pytest.mark.integration

KNOWN_ID = "console-test:known-1"
HOSTILE_USER = '<img src=x onerror="window.__pwned=1">\'"'
HOSTILE_REASON = "<script>window.__pwned=2</script>"
LIVE_USER = "<img src=x onerror=window.__pwned=4>live.victim"
ACME_EVENTS = 120


class Running(Up):
    def get(
        self, path: str, *, auth: bool = True, **kwargs: Any
    ) -> tuple[int, dict[str, str], bytes]:
        headers = dict(kwargs.pop("headers", {}))
        if auth:
            credential = base64.b64encode(f"analyst:{self.token}".encode()).decode()
            headers["Authorization"] = f"Basic {credential}"
        request = urllib.request.Request(self.console_url + path.lstrip("/"), headers=headers,
                                         **kwargs)  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def store(self) -> ServerBackend:
        return ServerBackend(self.front_url, read_only=True)


def _send(bootstrap_servers: str, events: list[dict[str, Any]]) -> None:
    with AuditProducer(bootstrap_servers, "authtrail.events") as producer:
        for event in events:
            producer.send(event)


def _lockout_burst(tenant_id: str, user_name: str, start: int) -> list[dict[str, Any]]:
    """Two failures 0.3 s apart (Keycloak's quick-login rule locks), then one 10 s later
    in event time, which moves the account's watermark past the 5 s allowed lateness."""
    return [
        new_event(tenant_id, "LOGIN_FAILED", occurred_at=start + offset, user_name=user_name,
                  client_ip="203.0.113.99", service="sso", failure_reason="invalid_credentials")
        for offset in (0, 300_000, 10_000_000)
    ]  # fmt: skip


def _spraying(tenant_id: str, address: str, start: int) -> list[dict[str, Any]]:
    """One address failing for 10 distinct accounts (the spraying default), then once
    more 20 s later in event time to move the address's watermark past the lateness."""
    return [
        new_event(tenant_id, "LOGIN_FAILED", occurred_at=start + index * 1_000_000,
                  user_name=f"spray.user{index}", client_ip=address, service="sso")
        for index in (*range(10), 30)
    ]  # fmt: skip


def _wait_until(condition: Any, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout:g} s\n{log_tail(log)}")


def _all_stored_and_signed(running: Running, tenants: dict[str, int]) -> bool:
    with running.store() as store:
        rows = store.query_arrow(
            "SELECT e.tenant_id AS tenant_id, e.n AS n, ifNull(c.signed, 0) AS signed FROM "
            "(SELECT tenant_id, count() AS n, max(seq) AS last FROM events GROUP BY tenant_id) e "
            "LEFT JOIN (SELECT tenant_id, max(size) AS signed FROM checkpoints GROUP BY "
            "tenant_id) c ON e.tenant_id = c.tenant_id"
        ).to_pylist()
    found = {row["tenant_id"]: row for row in rows}
    return all(
        tenant in found
        and found[tenant]["n"] >= count
        and found[tenant]["signed"] == found[tenant]["n"]
        for tenant, count in tenants.items()
    )


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("console")
    with running_up(root, "--verify-every", "0") as up:
        state = Running(**vars(up))
        now = time.time_ns() // 1000
        start = now - 3_600_000_000
        events = [
            new_event("acme", "LOGIN_FAILED" if index % 4 == 0 else "LOGIN",
                      occurred_at=start + index * 7_000_000, user_name=f"user{index % 10}",
                      client_ip=f"198.51.100.{index % 7 + 1}", service="sso")
            for index in range(ACME_EVENTS)
        ]  # fmt: skip
        events.append(new_event(
            "globex", "LOGIN_FAILED", event_id=KNOWN_ID, occurred_at=now - 60_000_000,
            user_name="known.user", client_ip="203.0.113.77", service="vpn",
            failure_reason="invalid_credentials",
        ))  # fmt: skip
        events.append(new_event(
            "globex", "LOGIN_FAILED", occurred_at=now - 50_000_000, user_name=HOSTILE_USER,
            client_ip="203.0.113.66", service="vpn", failure_reason=HOSTILE_REASON,
            attributes={"note": "<script>window.__pwned=3</script>"},
        ))  # fmt: skip
        _send(state.bootstrap_servers, events)
        _wait_until(lambda: _all_stored_and_signed(state, {"acme": ACME_EVENTS, "globex": 2}),
                    120, "every event stored and signed", state.log)  # fmt: skip
        yield state


@pytest.fixture(scope="module")
def browser(running: Running) -> Iterator[Any]:
    yield from browser_session(running.token)


def _open(driver: Any, running: Running, path: str) -> None:
    driver.get(running.console_url + path.lstrip("/"))


def _store_counts(running: Running) -> dict[str, int]:
    with running.store() as store:
        row = store.query_arrow(
            "SELECT (SELECT count() FROM events) AS events, "
            "(SELECT count() FROM checkpoints) AS checkpoints, "
            "(SELECT count() FROM system.tables WHERE database = currentDatabase()) AS tables"
        ).to_pylist()[0]
    return {name: int(value) for name, value in row.items()}


def test_every_request_needs_the_credential(running: Running) -> None:
    for path in ("/", "/search?tenant=acme", "/event?tenant=acme&seq=1", "/proof?tenant=acme&seq=1",
                 "/api/lockouts", "/lockout?tenant=acme&seq=1", "/integrity",
                 "/static/console.js", "/nothing"):  # fmt: skip
        status, headers, _ = running.get(path, auth=False)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Basic "), path
    wrong = base64.b64encode(f"analyst:{running.token}x".encode()).decode()
    status, _, _ = running.get("/", auth=False, headers={"Authorization": f"Basic {wrong}"})
    assert status == 401
    writer = base64.b64encode(f"writer:{running.token}".encode()).decode()
    status, _, _ = running.get("/", auth=False, headers={"Authorization": f"Basic {writer}"})
    assert status == 401
    status, _, _ = running.get("/")
    assert status == 200
    status, _, _ = running.get("/", headers={"Host": "attacker.example:80"})
    assert status == 403  # a DNS-rebinding page sends its own name


def test_nothing_written_through_the_console(running: Running) -> None:
    before = _store_counts(running)
    insert = b"INSERT INTO events (tenant_id, seq) VALUES ('acme', 99999)"
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = running.get("/?query=DROP+TABLE+events", method=method, data=insert)
        assert status == 405 and headers["Allow"] == "GET, HEAD", method
    injections = ["x' OR '1'='1", "acme'); DROP TABLE events; --", "1 UNION SELECT * FROM events"]
    for text in injections:
        for field in ("tenant", "user", "ip", "type"):
            status, _, body = running.get(f"/search?{urllib.parse.urlencode({field: text})}")
            assert status == 200, (field, text)
            assert "0 matching events" in body.decode(), (field, text)
    for path in ("/event", "/lockout"):
        status, _, _ = running.get(f"{path}?tenant=acme&seq=1;DROP+TABLE+events")
        assert status == 400, path
    quoted = urllib.parse.urlencode({"tenant": "acme' OR 1=1 --", "seq": "1"})
    status, _, body = running.get(f"/lockout?{quoted}")
    assert status == 404 and "No lock or unlock decision" in body.decode()
    assert _store_counts(running) == before


def test_pages_load_with_real_data(running: Running, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    _open(browser, running, "/")
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 4
    labels = [chart.get_attribute("aria-label") for chart in charts]
    assert "events per tenant" in labels and "failed logins per address" in labels
    page = browser.page_source
    assert ">acme<" in page and ">globex<" in page and "198.51.100." in page
    screenshot(browser, "dashboard")
    for path, heading, name in (("/search", "Search events", "search-form"),
                                ("/lockouts", "Lockouts and spraying alerts", "lockouts"),
                                ("/integrity", "Integrity", "integrity")):  # fmt: skip
        _open(browser, running, path)
        assert browser.find_element(By.TAG_NAME, "h1").text == heading
        screenshot(browser, name)
    not_pwned(browser)


def test_search_finds_a_known_event_and_its_proof_verifies(running: Running, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    _open(browser, running, "/search")
    Select(browser.find_element(By.NAME, "tenant")).select_by_value("globex")
    browser.find_element(By.NAME, "user").send_keys("known.user")
    browser.find_element(By.NAME, "ip").send_keys("203.0.113.77")
    Select(browser.find_element(By.NAME, "type")).select_by_value("LOGIN_FAILED")
    browser.find_element(By.CSS_SELECTOR, "form.search button").click()
    # The click returns once the submit started; on a loaded machine the old page (no
    # results table) can still be the one read.
    WebDriverWait(browser, 30).until(lambda driver: "user=known.user" in driver.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "table.results tr")[1:]
    assert len(rows) == 1 and KNOWN_ID in rows[0].text
    assert "1 matching events" in browser.find_element(By.CLASS_NAME, "summary").text
    screenshot(browser, "search-known-event")
    rows[0].find_element(By.TAG_NAME, "a").click()
    WebDriverWait(browser, 30).until(lambda driver: "Chain position" in driver.page_source)
    assert KNOWN_ID in browser.page_source
    seq = int(re.search(r"seq (\d+)", browser.find_element(By.TAG_NAME, "h1").text)[1])
    assert f"Record {seq} of " in browser.page_source
    proof_link = browser.find_element(By.CSS_SELECTOR, "a.proof")
    screenshot(browser, "event-page")
    href = proof_link.get_attribute("href")
    status, headers, body = running.get(href[len(running.console_url) - 1 :])
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    keyring = load_keyring([running.data_dir / "keys" / "authtrail.pub"])
    verdict = verify_bundle(load_bundle(body), keyring)
    assert (verdict.event_id, verdict.tenant_id, verdict.seq) == (KNOWN_ID, "globex", seq)
    tampered = json.loads(body)
    tampered["event"]["client_ip"] = "203.0.113.78"
    with pytest.raises(Exception, match="globex"):
        verify_bundle(tampered, keyring)


def test_paging_walks_every_result_once(running: Running, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    with running.store() as store:
        total = int(store.query_arrow("SELECT count() FROM events WHERE tenant_id = 'acme'")
                    .column(0)[0].as_py())  # fmt: skip
    _open(browser, running, "/search?tenant=acme")
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        rows = browser.find_elements(By.CSS_SELECTOR, "table.results tr")[1:]
        assert 0 < len(rows) <= 50
        seen += [row.find_elements(By.TAG_NAME, "td")[1].text for row in rows]
        assert f"{total:,} matching events" in browser.find_element(By.CLASS_NAME, "summary").text
        following = browser.find_elements(By.CSS_SELECTOR, "a[rel=next]")
        if not following:
            break
        if pages == 2:
            screenshot(browser, "search-page-2")
        following[0].click()
    assert pages == (total + 49) // 50 >= 3
    assert sorted(map(int, seen)) == list(range(1, total + 1))  # every seq once
    browser.find_element(By.CSS_SELECTOR, "a[rel=prev]").click()
    assert f"(page {pages - 1})" in browser.find_element(By.CLASS_NAME, "summary").text


def test_hostile_input_is_shown_as_text(running: Running, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    query = urllib.parse.urlencode({"tenant": "globex", "user": HOSTILE_USER})
    _open(browser, running, f"/search?{query}")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.results tr")[1:]
    assert len(rows) == 1 and HOSTILE_USER in rows[0].text
    assert browser.find_element(By.NAME, "user").get_attribute("value") == HOSTILE_USER
    not_pwned(browser)
    rows[0].find_element(By.TAG_NAME, "a").click()
    assert HOSTILE_REASON in browser.find_element(By.ID, "event").text
    not_pwned(browser)
    screenshot(browser, "hostile-event")
    echo = urllib.parse.urlencode({"ip": "<script>window.__pwned=9</script>", "since": "<b>x"})
    _open(browser, running, f"/search?{echo}")
    assert "is not a time" in browser.find_element(By.CLASS_NAME, "error").text
    assert browser.find_element(By.NAME, "ip").get_attribute("value").startswith("<script>")
    not_pwned(browser)


def test_an_injected_lockout_and_spraying_alert_appear_live(running: Running, browser: Any) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _open(browser, running, "/lockouts")
    assert LIVE_USER not in browser.find_element(By.ID, "lockouts").text
    browser.execute_script("window.__samePage = 42")
    now = time.time_ns() // 1000
    # Spraying after the lock's last event: the detectors advance a tenant-wide floor, and
    # a failure older than it minus the allowed lateness is late and decides nothing.
    burst = _lockout_burst("globex", LIVE_USER, now)
    burst += _spraying("globex", "192.0.2.250", now + 11_000_000)
    _send(running.bootstrap_servers, burst)

    def shows_the_lock(driver: Any) -> bool:
        # Read the rows in one script call: the panel replaces them every 2 s.
        rows = driver.execute_script(
            "return Array.from(document.querySelectorAll('#lockouts tbody tr'), r => r.innerText)"
        )
        locked = any(LIVE_USER in row and "ACCOUNT_LOCKED" in row for row in rows)
        return locked and any("192.0.2.250" in row and "BRUTE_FORCE_SUSPECTED" in row
                              for row in rows)  # fmt: skip

    try:
        WebDriverWait(browser, 120, poll_frequency=0.5).until(shows_the_lock)
    except TimeoutException:
        raise AssertionError(
            f"not shown live: {browser.find_element(By.ID, 'lockouts').text}\n"
            + log_tail(running.log)
        ) from None
    assert browser.execute_script("return window.__samePage") == 42  # no reload: live
    assert "updated" in browser.find_element(By.ID, "updated").text
    not_pwned(browser)
    screenshot(browser, "lockout-live")

    # The live row links to the failures that locked the account.
    browser.execute_script(
        "for (const row of document.querySelectorAll('#lockouts tbody tr'))"
        "  if (row.innerText.includes('ACCOUNT_LOCKED') && row.innerText.includes(arguments[0]))"
        "    { row.querySelector('a').click(); return; }",
        LIVE_USER,
    )
    WebDriverWait(browser, 30).until(lambda driver: "/lockout?" in driver.current_url)
    failures = browser.find_elements(By.CSS_SELECTOR, "#failures tr")[1:]
    assert len(failures) == 2, browser.page_source  # the quick-login rule locks at two
    assert all("203.0.113.99" in row.text for row in failures)
    assert LIVE_USER in browser.find_element(By.ID, "decision").text
    not_pwned(browser)
    screenshot(browser, "lockout-failures")


def test_integrity_shows_the_last_verify_run(running: Running, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    _open(browser, running, "/integrity")
    assert "Never verified" in browser.find_element(By.CLASS_NAME, "never").text
    report = running.data_dir / "verify-report.json"
    verified = subprocess.run(
        [sys.executable, "-m", "authtrail.cli", "--data-dir", str(running.data_dir), "verify",
         "--key", str(running.data_dir / "keys" / "authtrail.pub"), "--report-json", str(report)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    _open(browser, running, "/integrity")
    assert "intact (exit code 0)" in browser.page_source
    verdicts = {
        row.find_elements(By.TAG_NAME, "td")[0].text: row.find_elements(By.TAG_NAME, "td")[1].text
        for row in browser.find_elements(By.CSS_SELECTOR, "#verdicts tr")[1:]
    }
    assert verdicts["acme"] == verdicts["globex"] == "ok"
    screenshot(browser, "integrity-verified")


def test_console_command_against_a_server(running: Running, tmp_path: Path) -> None:
    """`authtrail console --clickhouse-url`: the front stands in for a ClickHouse server;
    the console is behind that URL's credential and finds what the store holds."""
    log = tmp_path / "console.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "authtrail.cli", "--data-dir", str(tmp_path / "none"),
             "console", "--clickhouse-url", running.front_url, "--listen", "127.0.0.1:0"],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_log_text(log, "web console: ", process, timeout=60)
        url = re.search(r"web console: (\S+)", log.read_text())[1]
        other = Running(running.data_dir, log, process, url, running.token, running.front_url,
                        running.bootstrap_servers)  # fmt: skip
        assert other.get("/", auth=False)[0] == 401
        status, _, body = other.get(f"/search?{urllib.parse.urlencode({'user': 'known.user'})}")
        assert status == 200 and KNOWN_ID in body.decode()
        status, _, body = other.get("/integrity")  # its data dir holds no report
        assert status == 200 and "Never verified" in body.decode()
    finally:
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(30) == 0, log_tail(log)


def test_console_refuses_a_store_url_without_a_password_or_a_writer(
    running: Running, http_front: Any, tmp_path: Path
) -> None:
    from authtrail.console.server import Console
    from authtrail.errors import InvalidArgumentError

    no_password = re.sub(r"analyst:[^@]+@", "analyst@", running.front_url)
    refused = subprocess.run(
        [sys.executable, "-m", "authtrail.cli", "--data-dir", str(tmp_path), "console",
         "--clickhouse-url", no_password, "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "has none" in refused.stderr
    nothing = subprocess.run(
        [sys.executable, "-m", "authtrail.cli", "--data-dir", str(tmp_path), "console"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert nothing.returncode == 2 and "console needs --clickhouse-url" in nothing.stderr
    with ServerBackend(http_front.writer_url) as writer, pytest.raises(InvalidArgumentError):
        Console(writer, user="writer", password="x", log_origin="o", report_path=tmp_path)
