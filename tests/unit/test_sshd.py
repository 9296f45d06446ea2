"""OpenSSH / Linux auth-log lines to AuthEvents; the syslog year rule; the file follower."""

# Log lines stay verbatim, one per source line, so they can be compared with real logs.
# ruff: noqa: E501

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from authtrail.producers.sshd import ParseCounters, iter_events
from authtrail.producers.syslog import SyslogReader, guess_start_year
from authtrail.producers.tail import follow
from authtrail.schemas import AUTH_EVENT, load_schema
from authtrail.schemas.codec import SingleObjectCodec

CODEC = SingleObjectCodec(load_schema(AUTH_EVENT))


def micros(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000


def parse(*lines: str, year: int = 2024, tz: Any = UTC) -> list[dict[str, Any]]:
    return list(iter_events(lines, tenant_id="acme", year=year, tz=tz))


def only(line: str) -> dict[str, Any]:
    (event,) = parse(line)
    CODEC.decode(CODEC.encode(event))  # every event fits the schema
    return event


def picked(event: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: event[name] for name in names}


COLUMNS = ("event_type", "event_type_other", "outcome", "user_name", "client_ip", "auth_method")


def test_failed_password_for_a_valid_user() -> None:
    line = "Dec 10 07:13:43 LabSZ sshd[24227]: Failed password for root from 5.36.59.76 port 42393 ssh2"
    event = only(line)
    assert event == {
        "event_id": event["event_id"],
        "tenant_id": "acme",
        "event_type": "LOGIN_FAILED",
        "event_type_other": None,
        "outcome": "FAILURE",
        "occurred_at": micros(2024, 12, 10, 7, 13, 43),
        "source": "openssh",
        "source_event_type": "failed",
        "user_name": "root",
        "service": "sshd",
        "host": "LabSZ",
        "client_ip": "5.36.59.76",
        "auth_method": "password",
        "failure_reason": "wrong password",
        "message": "Failed password for root from 5.36.59.76 port 42393 ssh2",
        "attributes": {"raw": line, "program": "sshd", "pid": "24227", "port": "42393"},
    }
    assert event["event_id"].startswith("authlog:") and len(event["event_id"]) == 40


@pytest.mark.parametrize(
    ("message", "expected", "attributes"),
    [
        ("Failed password for invalid user webmaster from 173.234.31.186 port 38926 ssh2",
         ("LOGIN_FAILED", None, "FAILURE", "webmaster", "173.234.31.186", "password"),
         {"invalid_user": "true", "port": "38926"}),
        ("Failed none for invalid user 0 from 123.235.32.19 port 49267 ssh2",
         ("LOGIN_FAILED", None, "FAILURE", "0", "123.235.32.19", "none"), {"invalid_user": "true"}),
        ("Accepted password for fztu from 119.137.62.142 port 49116 ssh2",
         ("LOGIN", None, "SUCCESS", "fztu", "119.137.62.142", "password"), {"port": "49116"}),
        ("Accepted publickey for vagrant from 10.0.2.2 port 63673 ssh2: RSA SHA256:abc+/def",
         ("LOGIN", None, "SUCCESS", "vagrant", "10.0.2.2", "publickey"), {"key": "RSA SHA256:abc+/def"}),
        ("Accepted publickey for alice from 2001:db8::7 port 50022 ssh2: ED25519 SHA256:xyz",
         ("LOGIN", None, "SUCCESS", "alice", "2001:db8::7", "publickey"), {"port": "50022"}),
        ("Invalid user test9 from 52.80.34.196",
         ("OTHER", "invalid_user", "FAILURE", "test9", "52.80.34.196", None), {"invalid_user": "true"}),
        ("Invalid user admin from 203.0.113.5 port 4242",
         ("OTHER", "invalid_user", "FAILURE", "admin", "203.0.113.5", None), {"port": "4242"}),
        ("input_userauth_request: invalid user test9 [preauth]",
         ("OTHER", "invalid_user_request", "FAILURE", "test9", None, None), {}),
        ("pam_unix(sshd:auth): check pass; user unknown",
         ("OTHER", "pam_user_unknown", "FAILURE", None, None, None), {"pam_service": "sshd"}),
        ("pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= "
         "rhost=5.36.59.76.dynamic-dsl-ip.omantel.net.om  user=root",
         ("OTHER", "pam_auth_failure", "FAILURE", "root", None, "password"),
         {"rhost": "5.36.59.76.dynamic-dsl-ip.omantel.net.om", "uid": "0", "tty": "ssh"}),
        ("PAM 2 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=183.62.140.253  user=root",
         ("OTHER", "pam_more_failures", "FAILURE", "root", "183.62.140.253", None), {"count": "2"}),
        ("PAM service(sshd) ignoring max retries; 6 > 3",
         ("OTHER", "pam_max_retries", "FAILURE", None, None, None), {"tries": "6", "max": "3"}),
        ("pam_unix(sshd:session): session opened for user fztu by (uid=0)",
         ("OTHER", "session_opened", "SUCCESS", "fztu", None, None), {"by": "(uid=0)"}),
        ("pam_unix(sshd:session): session closed for user fztu",
         ("LOGOUT", None, "SUCCESS", "fztu", None, None), {}),
        ("Disconnecting: Too many authentication failures for root [preauth]",
         ("OTHER", "too_many_failures", "FAILURE", "root", None, None), {}),
        ("Disconnecting authenticating user root 203.0.113.9 port 51122: Too many authentication failures [preauth]",
         ("OTHER", "too_many_failures", "FAILURE", "root", "203.0.113.9", None), {"port": "51122"}),
        ("error: maximum authentication attempts exceeded for invalid user admin from 203.0.113.9 port 4 ssh2 [preauth]",
         ("OTHER", "max_attempts_exceeded", "FAILURE", "admin", "203.0.113.9", None), {"invalid_user": "true"}),
        ("reverse mapping checking getaddrinfo for ns.marryaldkfaczcz.com [173.234.31.186] failed - POSSIBLE BREAK-IN ATTEMPT!",
         ("OTHER", "possible_break_in", "UNKNOWN", None, "173.234.31.186", None), {"rhost": "ns.marryaldkfaczcz.com"}),
        ("Received disconnect from 52.80.34.196: 11: Bye Bye [preauth]",
         ("OTHER", "disconnect_received", "UNKNOWN", None, "52.80.34.196", None), {"code": "11", "reason": "Bye Bye"}),
        ("Received disconnect from 203.0.113.4 port 60000:11: disconnected by user",
         ("OTHER", "disconnect_received", "UNKNOWN", None, "203.0.113.4", None), {"port": "60000"}),
        ("error: Received disconnect from 103.99.0.122: 14: No more user authentication methods available. [preauth]",
         ("OTHER", "disconnect_auth_failed", "FAILURE", None, "103.99.0.122", None), {"code": "14"}),
        ("Disconnected from user alice 203.0.113.4 port 60000",
         ("OTHER", "disconnected", "UNKNOWN", "alice", "203.0.113.4", None), {"port": "60000"}),
        ("Connection closed by authenticating user root 203.0.113.8 port 42 [preauth]",
         ("OTHER", "connection_closed", "UNKNOWN", "root", "203.0.113.8", None), {"how": "closed"}),
        ("Connection closed by 212.47.254.145 [preauth]",
         ("OTHER", "connection_closed", "UNKNOWN", None, "212.47.254.145", None), {}),
        ("Did not receive identification string from 2.125.160.217",
         ("OTHER", "no_identification", "FAILURE", None, "2.125.160.217", None), {}),
        ("fatal: Write failed: Connection reset by peer [preauth]",
         ("OTHER", "connection_error", "FAILURE", None, None, None), {"reason": "Write failed: Connection reset by peer"}),
        ("User bob from 203.0.113.3 not allowed because not listed in AllowUsers",
         ("OTHER", "user_not_allowed", "FAILURE", "bob", "203.0.113.3", None), {}),
    ],
)  # fmt: skip
def test_sshd_messages(message: str, expected: tuple[Any, ...], attributes: dict[str, str]) -> None:
    event = only(f"Dec 10 06:55:46 LabSZ sshd[24200]: {message}")
    assert tuple(picked(event, *COLUMNS).values()) == expected
    assert attributes.items() <= event["attributes"].items()
    assert event["message"] == message
    assert event["service"] == "sshd" and event["host"] == "LabSZ"


def test_message_repeated_becomes_that_many_failures() -> None:
    line = (
        "Dec 10 07:13:56 LabSZ sshd[24227]: message repeated 5 times: "
        "[ Failed password for root from 5.36.59.76 port 42393 ssh2]"
    )
    events = parse(line)
    assert [event["event_type"] for event in events] == ["LOGIN_FAILED"] * 5
    assert len({event["event_id"] for event in events}) == 5
    assert [event["attributes"]["repeat"] for event in events] == [
        "1/5",
        "2/5",
        "3/5",
        "4/5",
        "5/5",
    ]
    assert {event["user_name"] for event in events} == {"root"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Jun 15 02:04:59 combo sshd(pam_unix)[20882]: authentication failure; logname= uid=0 "
         "euid=0 tty=NODEVssh ruser= rhost=220-135-151-1.hinet-ip.hinet.net  user=root",
         ("LOGIN_FAILED", None, "FAILURE", "root", None, "password")),
        ("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0 "
         "euid=0 tty=NODEVssh ruser= rhost=218.188.2.4 ",
         ("LOGIN_FAILED", None, "FAILURE", None, "218.188.2.4", "password")),
        ("Jun 15 04:06:18 combo su(pam_unix)[21416]: session opened for user cyrus by (uid=0)",
         ("OTHER", "session_opened", "SUCCESS", "cyrus", None, None)),
        ("Jun 15 04:06:19 combo su(pam_unix)[21416]: session closed for user cyrus",
         ("OTHER", "session_closed", "SUCCESS", "cyrus", None, None)),
        ("Jul 10 10:00:01 combo login(pam_unix)[2252]: session closed for user root",
         ("LOGOUT", None, "SUCCESS", "root", None, None)),
        ("Jun 30 20:53:04 combo klogind[19272]: Authentication failed from 163.27.187.39 "
         "(163.27.187.39): Permission denied in replay cache code ",
         ("LOGIN_FAILED", None, "FAILURE", None, "163.27.187.39", "kerberos")),
        ("Jul 24 02:38:23 combo ftpd[16781]: ANONYMOUS FTP LOGIN FROM 84.102.20.2,  (anonymous)",
         ("LOGIN", None, "SUCCESS", "anonymous", "84.102.20.2", "anonymous")),
        ("Feb 21 23:35:33 localhost sudo: vagrant : TTY=pts/0 ; PWD=/home/vagrant ; USER=root ; COMMAND=/bin/ls",
         ("OTHER", "sudo_command", "SUCCESS", "vagrant", None, None)),
        ("Feb 24 00:13:02 precise32 sudo:      tsg : user NOT in sudoers ; TTY=pts/1 ; "
         "PWD=/home/vagrant ; USER=root ; COMMAND=/bin/ls",
         ("OTHER", "sudo_denied", "FAILURE", "tsg", None, None)),
        ("Feb 22 11:47:05 localhost useradd[6995]: new user: name=apache, UID=48, GID=48, "
         "home=/usr/share/httpd, shell=/sbin/nologin",
         ("OTHER", "user_created", "SUCCESS", "apache", None, None)),
        ("Feb 22 11:47:05 localhost passwd[7000]: pam_unix(passwd:chauthtok): password changed for bob",
         ("PASSWORD_CHANGED", None, "SUCCESS", "bob", None, None)),
    ],
)  # fmt: skip
def test_linux_auth_lines(line: str, expected: tuple[Any, ...]) -> None:
    assert tuple(picked(only(line), *COLUMNS).values()) == expected


def test_sudo_fields_and_denial_reason() -> None:
    denied = only(
        "Feb 24 00:13:02 precise32 sudo:      tsg : user NOT in sudoers ; TTY=pts/1 ; "
        "PWD=/home/vagrant ; USER=root ; COMMAND=/bin/ls"
    )
    assert denied["failure_reason"] == "user NOT in sudoers"
    assert {"target": "root", "command": "/bin/ls", "tty": "pts/1"}.items() <= denied[
        "attributes"
    ].items()


def test_skipped_lines_are_counted_by_reason() -> None:
    counters = ParseCounters()
    lines = [
        "",
        "not a syslog line",
        "Feb 30 10:00:00 host sshd[1]: Failed password for root from 1.2.3.4 port 1 ssh2",
        "Jun 14 15:16:01 combo kernel: usbcore: registered new driver hub",
        "Jun 14 15:16:01 combo syslogd 1.4.1: restart.",
        "Jun 14 15:16:01 combo sshd[1]: Server listening on 0.0.0.0 port 22.",
        "Jun 14 15:16:01 combo ftpd[2]: connection from 24.54.76.216 () at Sun Jul 10 2005",
        "Jun 14 15:16:01 combo sshd[1]: something sshd has never said",
        "Jun 14 15:16:01 combo sshd[1]: Invalid user x from 1.2.3.4",
    ]
    events = list(iter_events(lines, tenant_id="acme", year=2005, counters=counters))
    assert len(events) == 1 and counters.events == 1 and counters.lines == len(lines)
    assert dict(counters.parsed) == {"invalid_user": 1}
    assert dict(counters.skipped) == {
        "blank": 1,
        "unparsable": 2,  # no syslog header; February 30th
        "other_program": 1,
        "no_program": 1,
        "service_notice": 1,
        "connection_notice": 1,
        "unrecognized": 1,
    }


# -- time: year rollover, zones, RFC 3339 ---------------------------------------------------------


def test_year_rolls_over_from_december_to_january() -> None:
    lines = [
        "Dec 31 23:59:59 h sshd[1]: Invalid user a from 192.0.2.1",
        "Jan  1 00:00:01 h sshd[1]: Invalid user b from 192.0.2.1",
        "Dec 31 23:59:58 h sshd[1]: Invalid user c from 192.0.2.1",  # straggler: still 2024
        "Feb  3 10:00:00 h sshd[1]: Invalid user d from 192.0.2.1",
        "Jan 30 10:00:00 h sshd[1]: Invalid user e from 192.0.2.1",  # a month back: same year
    ]
    assert [event["occurred_at"] for event in parse(*lines, year=2024)] == [
        micros(2024, 12, 31, 23, 59, 59),
        micros(2025, 1, 1, 0, 0, 1),
        micros(2024, 12, 31, 23, 59, 58),
        micros(2025, 2, 3, 10, 0, 0),
        micros(2025, 1, 30, 10, 0, 0),
    ]


def test_time_zone_and_rfc3339_timestamps() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    line = "Jun  1 12:00:00 h sshd[1]: Invalid user a from 192.0.2.1"
    assert parse(line, tz=berlin)[0]["occurred_at"] == micros(2024, 6, 1, 10, 0, 0)
    assert parse(line)[0]["occurred_at"] == micros(2024, 6, 1, 12, 0, 0)
    iso = "2025-03-04T05:06:07.123456+01:00 h sshd[1]: Invalid user a from 192.0.2.1"
    assert parse(iso, year=1999)[0]["occurred_at"] == micros(2025, 3, 4, 4, 6, 7) + 123456


def test_reader_reports_why_it_cannot_read() -> None:
    reader = SyslogReader(2024)
    assert reader.read("\n") == "blank"
    assert reader.read("Foo 10 10:00:00 h sshd[1]: x") == "unparsable"
    line = reader.read("Dec 10 06:55:46 LabSZ sshd(pam_unix)[24200]: check pass\r\n")
    assert not isinstance(line, str)
    assert (line.program, line.module, line.pid, line.message) == (
        "sshd",
        "pam_unix",
        "24200",
        "check pass",
    )


def test_guess_start_year_from_mtime(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("Dec 30 10:00:00 h sshd[1]: x\nJan  2 10:00:00 h sshd[1]: y\n")
    os.utime(log, (micros(2026, 1, 3, 0, 0, 0) / 1e6,) * 2)
    assert guess_start_year(log) == 2025  # one rollover before the 2026 mtime
    log.write_text("Dec 30 10:00:00 h sshd[1]: x\n")
    os.utime(log, (micros(2026, 2, 1, 0, 0, 0) / 1e6,) * 2)  # touched in a later year
    assert guess_start_year(log) == 2025
    os.utime(log, (micros(2025, 12, 31, 0, 0, 0) / 1e6,) * 2)
    assert guess_start_year(log) == 2025


def test_no_line_is_put_in_the_future() -> None:
    now = micros(2026, 12, 4, 5, 0, 0)
    reader = SyslogReader(2026, now=lambda: now)
    times = []
    for raw in ["Dec 10 06:55:46 h sshd[1]: a", "Dec 11 01:00:00 h sshd[1]: b",
                "Jan  2 00:00:00 h sshd[1]: c"]:  # fmt: skip
        line = reader.read(raw)
        assert not isinstance(line, str)
        times.append(line.occurred_at)
    assert times == [
        micros(2025, 12, 10, 6, 55, 46),  # six days ahead of now: last year's
        micros(2025, 12, 11, 1, 0, 0),  # and the lines after it follow
        micros(2026, 1, 2, 0, 0, 0),  # the rollover still works
    ]
    line = SyslogReader(2026, now=lambda: now).read("Dec  4 20:00:00 h sshd[1]: d")
    assert not isinstance(line, str)  # within a day of now (a zone's error): kept
    assert line.occurred_at == micros(2026, 12, 4, 20, 0, 0)
    line = SyslogReader(2026).read("Dec 10 06:55:46 h sshd[1]: a")  # no bound: --year trusted
    assert not isinstance(line, str) and line.occurred_at == micros(2026, 12, 10, 6, 55, 46)


def test_guess_start_year_puts_the_newest_line_before_mtime_and_now(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("Dec 10 06:55:46 h sshd[1]: x\nDec 10 11:03:40 h sshd[1]: y\n")
    # The case: loghub's "Dec 10" lines in a file written on Dec 4.
    os.utime(log, (micros(2026, 12, 4, 2, 54, 0) / 1e6,) * 2)
    assert guess_start_year(log, now=micros(2026, 12, 4, 5, 0, 0)) == 2025
    os.utime(log, (micros(2026, 12, 11, 0, 0, 0) / 1e6,) * 2)
    assert guess_start_year(log, now=micros(2026, 12, 11, 1, 0, 0)) == 2026
    # An mtime ahead of the clock (a copy from a skewed host) does not lift the bound.
    assert guess_start_year(log, now=micros(2026, 12, 4, 5, 0, 0)) == 2025
    log.write_text("")
    assert guess_start_year(log, now=micros(2026, 12, 4, 5, 0, 0)) == 2026


# -- event ids ---------------------------------------------------------------------------


def test_event_ids_are_stable_and_distinct() -> None:
    line = "Dec 10 07:13:43 LabSZ sshd[24227]: Failed password for root from 5.36.59.76 port 4 ssh2"
    other = line.replace("port 4 ", "port 5 ")
    first = [event["event_id"] for event in parse(line, other, line)]
    assert len(set(first)) == 3  # the same line twice is two events
    assert [event["event_id"] for event in parse(line, other, line)] == first
    # Not bound to position: the same lines after rotation or behind other lines keep ids.
    shifted = [event["event_id"] for event in parse("", "junk", line, other, line)]
    assert shifted == first
    # Bound to the year: last year's identical line is another event.
    assert parse(line, year=2023)[0]["event_id"] != first[0]


# -- following a file ----------------------------------------------------------------------


class Script:
    """Runs one action per poll of the follower, then tells it to stop."""

    def __init__(self, *actions: Any) -> None:
        self.actions = list(actions)
        self.done = False

    def sleep(self, seconds: float) -> None:
        if self.actions:
            self.actions.pop(0)()
        else:
            self.done = True

    def stop(self) -> bool:
        return self.done


def collect(path: Path, script: Script, **options: Any) -> list[str]:
    lines: Iterator[str] = follow(
        path, poll_interval=0, stop=script.stop, sleep=script.sleep, **options
    )
    return list(lines)


def test_follow_reads_appended_lines_and_waits_for_whole_lines(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("one\ntwo\n")

    def append(text: str) -> Any:
        return lambda: log.open("a").write(text)

    script = Script(append("thr"), append("ee\nfour\r\n"))
    assert collect(log, script) == ["one", "two", "three", "four"]


def test_follow_from_the_end(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("old\n")
    script = Script(lambda: log.open("a").write("new\n"))
    assert collect(log, script, from_start=False) == ["new"]


def test_follow_survives_rotation(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("a\n")

    def rotate() -> None:
        with log.open("a") as handle:
            handle.write("b\nunterminated")  # written just before the rename
        log.rename(tmp_path / "auth.log.1")
        log.write_text("c\n")

    script = Script(rotate, lambda: log.open("a").write("d\n"))
    assert collect(log, script) == ["a", "b", "unterminated", "c", "d"]


def test_follow_restarts_after_truncation(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("first line\nsecond line\n")
    script = Script(lambda: log.write_text("x\n"))  # copytruncate, then a shorter write
    assert collect(log, script) == ["first line", "second line", "x"]


def test_follow_waits_for_a_missing_file(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    script = Script(lambda: None, lambda: log.write_text("hello\n"))
    assert collect(log, script) == ["hello"]


def test_follow_with_a_real_clock(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    stop = threading.Event()
    seen: list[str] = []

    def reader() -> None:
        for line in follow(log, poll_interval=0.01, stop=stop.is_set):
            seen.append(line)

    thread = threading.Thread(target=reader)
    thread.start()
    with log.open("a") as handle:
        handle.write("Dec 10 06:55:46 LabSZ sshd[1]: Invalid user a from 192.0.2.1\n")
    for _ in range(500):
        if seen:
            break
        threading.Event().wait(0.01)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert [event["user_name"] for event in parse(*seen)] == ["a"]
