"""Real auth logs through the OpenSSH adapter, the lockout and spraying detectors, and Kafka.

The logs are third-party (``../shared/realdata`` or ``$AUTHTRAIL_REALDATA``; see
SOURCES.txt there): loghub's OpenSSH_2k.log (a lab server, LabSZ, under attack on Dec 10)
and Linux_2k.log (/var/log/messages of an old RHEL host), and Elastic Beats' auth test
log. The module skips when they are absent.

Expected results are computed here from the raw lines with plain regular expressions and
loghub's own per-line template labels, independently of the adapter and detectors:

* every line of OpenSSH_2k.log is an event, of the kind its loghub template says;
* with Keycloak's default policy, the accounts locked are exactly those with two failures
  in the same syslog second (a "quick login": under 1000 ms apart) or with 30 failures
  (Max Login Failures; the log spans four hours, under the 12 h reset time);
* the addresses flagged for spraying are exactly those with failures for 10 distinct
  accounts within some 600 s: 103.99.0.122, 183.62.140.253 and 187.141.143.180 (the
  test asserts this list too, so a change in the data cannot pass unnoticed).
"""

from __future__ import annotations

import csv
import os
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from authtrail.broker import LocalBroker
from authtrail.producers.sshd import ParseCounters, iter_events, run_ingest
from authtrail.schemas import AUTH_EVENT, load_schema
from authtrail.schemas.codec import SingleObjectCodec
from authtrail.stream.detection.decisions import ACCOUNT_LOCKED, BRUTE_FORCE_SUSPECTED, Decision
from authtrail.stream.detection.lockout import LockoutDetector
from authtrail.stream.detection.lockout_policy import LockoutPolicy, SprayPolicy
from authtrail.stream.detection.spray import SprayDetector
from authtrail.topics import TopicSpec, ensure_topics
from tests.integration.broker_fixtures import read_events, read_topic, running_broker
from tests.realdata import REALDATA

pytestmark = pytest.mark.integration

OPENSSH = REALDATA / "loghub" / "OpenSSH_2k.log"
LINUX = REALDATA / "loghub" / "Linux_2k.log"
BEATS = REALDATA / "authlogs_other" / "beats_system_auth_test.log"
if not OPENSSH.is_file():
    pytest.skip(f"real data not present at {REALDATA}", allow_module_level=True)

YEAR = 2016  # the loghub OpenSSH capture; any year works, none is in the lines
TENANT = "labsz"
CODEC = SingleObjectCodec(load_schema(AUTH_EVENT))

# loghub's template ids (OpenSSH_2k.log_templates.csv) and the kind each must become.
TEMPLATE_KINDS = {
    "E1": "accepted", "E2": "connection_closed", "E3": "no_identification",
    "E4": "too_many_failures", "E5": "too_many_failures", "E6": "disconnect_auth_failed",
    "E7": "disconnect_auth_failed", "E8": "failed", "E9": "failed", "E10": "failed",
    "E11": "connection_error", "E12": "invalid_user_request", "E13": "invalid_user",
    "E14": "failed", "E15": "pam_more_failures", "E16": "pam_more_failures",
    "E17": "pam_more_failures", "E18": "pam_max_retries", "E19": "pam_auth_failure",
    "E20": "pam_auth_failure", "E21": "pam_user_unknown", "E22": "session_closed",
    "E23": "session_opened", "E24": "disconnect_received", "E25": "disconnect_received",
    "E26": "disconnect_received", "E27": "possible_break_in",
}  # fmt: skip

FAILURE_LINE = re.compile(
    r"(\w{3}) +(\d+) (\d\d):(\d\d):(\d\d) \S+ sshd\[\d+\]: "
    r"(?:message repeated (\d+) times: \[ )?Failed \S+ for (?:invalid user )?(.*?) "
    r"from (\S+) port \d+"
)


def events_of(path: Path, year: int = YEAR) -> tuple[list[dict[str, Any]], ParseCounters]:
    counters = ParseCounters()
    with path.open(encoding="utf-8") as lines:
        events = list(iter_events(lines, tenant_id=TENANT, year=year, counters=counters))
    return events, counters


def raw_failures() -> list[tuple[int, str, str]]:
    """(second of Dec 10, user, address) of every failed attempt, by regex on the raw text."""
    failures = []
    for line in OPENSSH.read_text(encoding="utf-8").splitlines():
        match = FAILURE_LINE.match(line)
        if match:
            month, day, hour, minute, second, repeated, user, address = match.groups()
            assert (month, day) == ("Dec", "10")
            at = int(hour) * 3600 + int(minute) * 60 + int(second)
            failures += [(at, user, address)] * int(repeated or 1)
    return failures


# -- the adapter ---------------------------------------------------------------------------


def test_every_openssh_line_becomes_the_event_its_template_says() -> None:
    with (REALDATA / "loghub" / "OpenSSH_2k.log_structured.csv").open(encoding="utf-8") as f:
        labels = [row["EventId"] for row in csv.DictReader(f)]
    lines = OPENSSH.read_text(encoding="utf-8").splitlines()
    assert len(labels) == len(lines) == 2000
    for label, line in zip(labels, lines, strict=True):
        events = list(iter_events([line], tenant_id=TENANT, year=YEAR))
        expected_count = 5 if label == "E14" else 1  # "message repeated 5 times"
        assert [event["source_event_type"] for event in events] == [
            TEMPLATE_KINDS[label]
        ] * expected_count, line
    events, counters = events_of(OPENSSH)
    assert counters.skipped == Counter() and counters.lines == 2000
    assert counters.events == len(events) == 2008
    assert len({event["event_id"] for event in events}) == 2008
    for event in events:
        CODEC.decode(CODEC.encode(event))
    assert Counter(event["event_type"] for event in events)["LOGIN_FAILED"] == len(raw_failures())


def test_linux_log_failures_and_skips() -> None:
    text = LINUX.read_text(encoding="utf-8")
    events, counters = events_of(LINUX, 2005)
    pam_failures = len(re.findall(r"sshd\(pam_unix\)\[\d+\]: authentication failure", text))
    kerberos = len(re.findall(r"klogind\[\d+\]: (?:Kerberos a|A)uthentication failed", text))
    failed = [event for event in events if event["event_type"] == "LOGIN_FAILED"]
    assert len(failed) == pam_failures + kerberos == 535
    # Every line of the authentication programs is an event; what is skipped is other
    # programs (kernel, named, cups, ...), ftpd connection notices and syslogd's restarts.
    auth_lines = re.findall(r"^.{16}\S+ (?:sshd|su|login|klogind)\b", text, flags=re.MULTILINE)
    from_auth = [e for e in events if e["service"] in ("sshd", "su", "login", "klogind")]
    assert len(from_auth) == len(auth_lines)
    assert "unrecognized" not in counters.skipped
    notices = re.findall(r"ftpd\[\d+\]: (?:connection from|getpeername)", text)
    assert counters.skipped["connection_notice"] == len(notices)
    assert counters.lines == 2000 == counters.events + sum(counters.skipped.values())


def test_beats_sample() -> None:
    events, counters = events_of(BEATS)
    assert counters.skipped == Counter()
    assert [(e["event_type"], e["source_event_type"], e["user_name"]) for e in events] == [
        ("LOGIN", "accepted", "vagrant"),
        ("LOGIN", "accepted", "vagrant"),
        ("OTHER", "invalid_user", "test"),
        ("LOGIN_FAILED", "failed", "root"),
        ("OTHER", "sudo_command", "vagrant"),
        ("OTHER", "no_identification", None),
        ("OTHER", "sudo_command", "vagrant"),
        ("OTHER", "sudo_denied", "tsg"),
        ("OTHER", "group_created", "apache"),
        ("OTHER", "user_created", "apache"),
    ]


# -- the detectors on a real attack ---------------------------------------------------------


def detect(events: list[dict[str, Any]]) -> list[Decision]:
    # Linux account names are case-sensitive: do not fold them as Keycloak would.
    lockout = LockoutDetector(lambda tenant: LockoutPolicy(case_insensitive_user_names=False))
    spray = SprayDetector(lambda tenant: SprayPolicy(case_insensitive_user_names=False))
    decisions: list[Decision] = []
    for event in events:
        decisions += lockout.observe(event) + spray.observe(event)
    end = max(event["occurred_at"] for event in events) + 86_400 * 1_000_000
    return decisions + lockout.advance(TENANT, end) + spray.advance(TENANT, end)


def test_detectors_flag_the_attackers() -> None:
    events, _ = events_of(OPENSSH)
    decisions = detect(events)
    failures = raw_failures()
    accepted = {e["user_name"] for e in events if e["event_type"] == "LOGIN"}
    assert not accepted & {user for _, user, _ in failures}  # no success resets a count

    # Lockouts: the first lock of each account is at its first same-second pair of
    # failures or its 30th failure, whichever comes first.
    times: dict[str, list[int]] = defaultdict(list)
    for at, user, _ in failures:
        times[user].append(at)
    first_lock: dict[str, int] = {}
    for user, seconds in times.items():
        candidates = [seconds[i] for i in range(1, len(seconds)) if seconds[i] == seconds[i - 1]]
        candidates += seconds[29:30]
        if candidates:
            first_lock[user] = min(candidates)
    locks = [d for d in decisions if d.kind == ACCOUNT_LOCKED]
    found: dict[str, int] = {}
    for decision in locks:
        assert decision.user_name is not None
        found.setdefault(decision.user_name, decision.occurred_at)
    midnight = int(datetime(YEAR, 12, 10, tzinfo=UTC).timestamp()) * 1_000_000
    assert {user: (at - midnight) // 1_000_000 for user, at in found.items()} == first_lock
    assert set(first_lock) == {"root", "admin"}
    addresses_by_second = defaultdict(set)
    for at, user, address in failures:
        addresses_by_second[user, at].add(address)
    for decision in locks:  # each lock names an address that failed at that moment
        second = (decision.occurred_at - midnight) // 1_000_000
        assert decision.client_ip in addresses_by_second[decision.user_name, second]

    # Spraying: addresses with 10 distinct accounts failing within some 600 s.
    by_address: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for at, user, address in failures:
        by_address[address].append((at, user))
    spraying = set()
    for address, attempts in by_address.items():
        for at, _ in attempts:
            window = {user for other, user in attempts if at - 600 < other <= at}
            if len(window) >= 10:
                spraying.add(address)
    alerts = [d for d in decisions if d.kind == BRUTE_FORCE_SUSPECTED]
    assert {alert.client_ip for alert in alerts} == spraying
    assert spraying == {"103.99.0.122", "183.62.140.253", "187.141.143.180"}
    for alert in alerts:
        assert alert.distinct_users >= 10
        assert (alert.window_end or 0) - (alert.window_start or 0) < 600 * 1_000_000


# -- into Kafka -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    yield from running_broker(tmp_path_factory.mktemp("broker"))


def new_topic(broker: LocalBroker) -> str:
    name = f"sshd-{uuid.uuid4().hex[:10]}"
    ensure_topics(broker.bootstrap_servers, [TopicSpec(name, 1)])
    return name


def test_run_ingest_sends_every_event_once_and_reingest_keeps_ids(broker: LocalBroker) -> None:
    topic = new_topic(broker)
    expected = [event["event_id"] for event in events_of(OPENSSH)[0]]
    summary = run_ingest(
        OPENSSH, bootstrap_servers=broker.bootstrap_servers, topic=topic, tenant_id=TENANT,
        year=YEAR,
    )  # fmt: skip
    assert (summary.sent, summary.acknowledged, summary.failed) == (2008, 2008, 0)
    assert summary.counters.events == 2008 and not summary.counters.skipped
    run_ingest(
        OPENSSH, bootstrap_servers=broker.bootstrap_servers, topic=topic, tenant_id=TENANT,
        year=YEAR,
    )  # fmt: skip
    found = read_events(broker.bootstrap_servers, topic, 1, 2 * 2008)
    ids = [event["event_id"] for _, event in found]
    assert ids == expected + expected  # the second pass repeats ids: the sequencer drops it
    assert {key for key, _ in found} == {TENANT.encode()}


def test_run_ingest_follows_a_growing_file(broker: LocalBroker, tmp_path: Path) -> None:
    topic = new_topic(broker)
    # The file's last line has no newline; a follower waits for one, so the writer here
    # finishes every line.
    lines = [line + "\n" for line in OPENSSH.read_text(encoding="utf-8").splitlines()]
    log = tmp_path / "auth.log"
    log.write_text("".join(lines[:100]), encoding="utf-8")
    stop = threading.Event()
    result: dict[str, Any] = {}

    def ingest() -> None:
        result["summary"] = run_ingest(
            log, bootstrap_servers=broker.bootstrap_servers, topic=topic, tenant_id=TENANT,
            year=YEAR, follow=True, poll_interval=0.05, stop=stop.is_set,
        )  # fmt: skip

    worker = threading.Thread(target=ingest)
    worker.start()
    try:
        time.sleep(0.3)
        with log.open("a", encoding="utf-8") as handle:
            handle.writelines(lines[100:])
        expected = [event["event_id"] for event in events_of(OPENSSH)[0]]
        found = read_events(broker.bootstrap_servers, topic, 1, len(expected), timeout=60)
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not worker.is_alive()
    assert [event["event_id"] for _, event in found] == expected
    assert result["summary"].acknowledged == len(expected)


def test_ingest_warns_before_sending_what_the_worker_will_refuse(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """The issue's case: "Dec 10" lines ingested on Dec 4 with that year lie in the future."""
    now = int(datetime(2026, 12, 4, 5, 0, tzinfo=UTC).timestamp()) * 1_000_000
    copy = tmp_path / "OpenSSH_2k.log"
    copy.write_bytes(OPENSSH.read_bytes())
    os.utime(copy, (now / 1e6 - 7200,) * 2)
    topic = new_topic(broker)

    class Stop(Exception):
        pass

    def refuse(text: str) -> None:
        raise Stop(text)

    with pytest.raises(Stop) as warned:  # a warning that stops the run: nothing was sent
        run_ingest(copy, bootstrap_servers=broker.bootstrap_servers, topic=topic,
                   tenant_id=TENANT, year=2026, now=lambda: now, warn=refuse)  # fmt: skip
    assert str(warned.value).startswith(
        "warning: 2008 of 2008 events will be refused by the worker as absurd_timestamp"
    )
    assert "--year" in str(warned.value)
    assert read_topic(broker.bootstrap_servers, topic, 1, 1, timeout=3) == []

    warnings: list[str] = []
    summary = run_ingest(copy, bootstrap_servers=broker.bootstrap_servers, topic=topic,
                         tenant_id=TENANT, now=lambda: now, warn=warnings.append)  # fmt: skip
    assert warnings == [] and not summary.refused
    assert (summary.sent, summary.acknowledged) == (2008, 2008)
    first = read_events(broker.bootstrap_servers, topic, 1, 1)[0][1]
    dec_10 = datetime(2025, 12, 10, 6, 55, 46, tzinfo=UTC)
    assert first["occurred_at"] == int(dec_10.timestamp()) * 1_000_000
